//! launchd socket activation (macOS): the `http` socket of the job's `Sockets` dictionary,
//! through `launch_activate_socket(3)`.
#![cfg(target_os = "macos")]

use std::os::fd::RawFd;

/// The proxy's socket in the plist's `Sockets` dictionary (systemd units name theirs the same
/// with `FileDescriptorName=http`).
pub const SOCKET_NAME: &str = "http";

/// The descriptors launchd holds for socket `name`; none when not started by launchd.
pub fn activate_socket(name: &str) -> anyhow::Result<Vec<RawFd>> {
    match raunch::activate_socket(name) {
        Ok(fds) => Ok(fds),
        // Not run by launchd, or the plist has no such socket: bind server.listen instead.
        Err(raunch::Error::NotManaged) | Err(raunch::Error::NotInPlist) => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!(
            "launch_activate_socket(\"{name}\") failed: {e:?}"
        )),
    }
}
