//! The processes under test and around them: nginx, the bench backend, HAProxy and
//! openai-proxy, each pinned to its CPU set, with their configs written to a scratch folder.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::configs::{haproxy_config, nginx_config, proxy_config, shipped_config, Upstreams};
use crate::http::{get_request, Conn};
use crate::sys::free_addr;

/// Makes `cmd` run on `cpus` only, and die with the harness (PR_SET_PDEATHSIG), so nothing is
/// left behind when the harness is interrupted.
pub fn pin(cmd: &mut Command, cpus: &[usize]) {
    let cpus = cpus.to_vec();
    // SAFETY: only async-signal-safe calls (sched_setaffinity, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cpus {
                libc::CPU_SET(c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Pins the calling process (the harness's own clients) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; the set is only read by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin the harness to CPUs {cpus:?}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Raises the open-file limit (children inherit it): to 262 144 where allowed (root), so ten
/// thousand streams through a proxy (two descriptors each, and as many on the load side) fit;
/// else to the hard limit.
pub fn raise_nofile() {
    const WANT: libc::rlim_t = 1 << 18;
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let raised = libc::rlimit {
                rlim_cur: WANT.max(lim.rlim_cur),
                rlim_max: WANT.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

/// A syslog socket (a Unix datagram socket in `dir`) that reads and discards what HAProxy logs
/// to it, as a local syslog daemon would; returns its path.
pub fn start_syslog(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("syslog.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path)?;
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while sock.recv(&mut buf).is_ok() {}
    });
    Ok(path)
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` on `cpus`, its output going to `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        cpus: &[usize],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        pin(cmd, cpus);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Wraps a child started elsewhere (cold-start measurements).
    pub fn adopt(name: &str, child: Child, log: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn status_kb(&self, field: &str) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} for {}", self.name))
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> anyhow::Result<f64> {
        Ok(self.status_kb("VmRSS:")? as f64 * 1024.0)
    }

    /// Peak resident set size since start or the last [`Proc::reset_peak`], in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<f64> {
        Ok(self.status_kb("VmHWM:")? as f64 * 1024.0)
    }

    /// Context switches so far (voluntary and not) of all the process's threads: how often it
    /// woke up.
    pub fn wakeups(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let status = fs::read_to_string(task?.path().join("status"))?;
            for l in status.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += v.trim().parse::<u64>().context("bad ctxt_switches")?;
                }
            }
        }
        Ok(total)
    }

    /// CPU time used so far by all the process's threads, in nanoseconds (schedstat).
    pub fn cpu_ns(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let stat = fs::read_to_string(task?.path().join("schedstat"))?;
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .context("bad schedstat")?;
        }
        Ok(total)
    }

    /// Resets the peak RSS to the current RSS (`clear_refs` 5, Linux ≥ 4.0).
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .with_context(|| format!("cannot reset the peak RSS of {}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET path` on `addr` answers 200.
pub fn wait_ready(proc: &mut Proc, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        proc.check_alive()?;
        match Conn::connect(addr).and_then(|mut c| c.roundtrip(&get_request(path))) {
            Ok((200, _)) => return Ok(()),
            Ok((s, _)) => last = format!("status {s}"),
            Err(e) => last = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "{} did not answer GET {path} on {addr} within 10 s ({last}); log:\n{}",
        proc.name,
        proc.log_tail()
    )
}

// ---------------------------------------------------------------------------------------------
// The stack

/// A proxy under test: a name for the table and the binary (`None`: HAProxy).
#[derive(Clone, Debug)]
pub struct Subject {
    pub name: String,
    pub kind: SubjectKind,
}

#[derive(Clone, Debug)]
pub enum SubjectKind {
    /// HAProxy, with `option httplog` to the run's syslog socket or without logging.
    Haproxy { log: bool },
    /// An openai-proxy binary, with or without access logging, routing by path or by model,
    /// chat to one server or to a pool of two (with metrics on).
    Proxy {
        bin: PathBuf,
        access_log: bool,
        model_routes: bool,
        pool: bool,
    },
}

/// Settings every run shares.
#[derive(Clone, Debug)]
pub struct Env {
    pub dir: PathBuf,
    pub proxy_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    /// Where HAProxy logs when it does.
    pub syslog: Option<PathBuf>,
    /// Appended to every openai-proxy config (`callgrind --clients`).
    pub extra_config: String,
    /// `server.client_tokens_file` of every openai-proxy config (`callgrind --auth`).
    pub tokens_file: Option<PathBuf>,
}

impl Env {
    /// The command that runs `subject` (for the stack and for cold starts).
    pub fn command(&self, s: &Subject, config: &Path) -> Command {
        match &s.kind {
            SubjectKind::Haproxy { .. } => {
                let mut c = Command::new("haproxy");
                c.arg("-db").arg("-f").arg(config);
                c
            }
            SubjectKind::Proxy { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg("--config")
                    .arg(config)
                    .arg("serve")
                    .env_remove("LISTEN_FDS")
                    .env_remove("LISTEN_PID")
                    .env_remove("NOTIFY_SOCKET");
                c
            }
        }
    }

    /// Starts `subject` listening on `addr`, pinned to the proxy CPUs.
    pub fn spawn(
        &self,
        s: &Subject,
        tag: &str,
        addr: SocketAddr,
        up: Upstreams,
    ) -> anyhow::Result<Proc> {
        let config = self.write_config(s, tag, Some(addr), up)?;
        self.spawn_with(s, tag, &config)
    }

    /// Starts `subject` with a config already written.
    pub fn spawn_with(&self, s: &Subject, tag: &str, config: &Path) -> anyhow::Result<Proc> {
        let mut cmd = self.command(s, config);
        Proc::spawn(
            &format!("{}-{tag}", s.name.replace('+', "-")),
            &mut cmd,
            &self.proxy_cpus,
            &self.dir,
        )
    }

    /// Writes the config of `subject` for `bind` (an address or `fd@3`).
    pub fn write_config(
        &self,
        s: &Subject,
        tag: &str,
        listen: Option<SocketAddr>,
        up: Upstreams,
    ) -> anyhow::Result<PathBuf> {
        let (text, ext) = match &s.kind {
            SubjectKind::Haproxy { log } => {
                let bind = listen.map_or_else(|| "fd@3".to_string(), |a| a.to_string());
                let syslog = self.syslog.as_deref().filter(|_| *log);
                (haproxy_config(&bind, up, syslog), "cfg")
            }
            SubjectKind::Proxy {
                bin,
                access_log,
                model_routes,
                pool,
            } => {
                // Under socket activation the inherited socket wins over `listen`.
                let addr = match listen {
                    Some(a) => a,
                    None => free_addr()?,
                };
                let text = proxy_config(
                    shipped_config(bin, &self.dir)?,
                    addr,
                    up,
                    *access_log,
                    *model_routes,
                    *pool,
                )?;
                let text = match &self.tokens_file {
                    Some(f) => crate::configs::with_tokens_file(text, f)?,
                    None => text,
                };
                (text + &self.extra_config, "toml")
            }
        };
        let path = self
            .dir
            .join(format!("{}-{tag}.{ext}", s.name.replace('+', "-")));
        fs::write(&path, text)?;
        Ok(path)
    }
}

/// A running proxy under test.
pub struct Running {
    pub subject: Subject,
    pub addr: SocketAddr,
    pub proc: Proc,
}

/// Starts every subject against `up`.
pub fn start_subjects(
    env: &Env,
    subjects: &[Subject],
    up: Upstreams,
    tag: &str,
) -> anyhow::Result<Vec<Running>> {
    let mut running = Vec::new();
    for s in subjects {
        let addr = free_addr()?;
        let mut proc = env.spawn(s, tag, addr, up)?;
        wait_ready(&mut proc, addr, "/health")?;
        running.push(Running {
            subject: s.clone(),
            addr,
            proc,
        });
    }
    Ok(running)
}

/// nginx with the fixed chat answer.
pub fn start_nginx(env: &Env) -> anyhow::Result<(Proc, SocketAddr)> {
    start_nginx_in(env, &env.dir)
}

/// A second nginx (for the pool), with its files in `name` under the run's directory.
pub fn start_second_nginx(env: &Env, name: &str) -> anyhow::Result<(Proc, SocketAddr)> {
    let dir = env.dir.join(name);
    fs::create_dir_all(&dir)?;
    start_nginx_in(env, &dir)
}

fn start_nginx_in(env: &Env, dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_addr()?;
    for d in [
        "nginx-body",
        "nginx-proxy",
        "nginx-fastcgi",
        "nginx-uwsgi",
        "nginx-scgi",
    ] {
        fs::create_dir_all(dir.join(d))?;
    }
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_config(dir, addr))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-c").arg(&conf);
    let mut proc = Proc::spawn("nginx", &mut cmd, &env.load_cpus, dir)?;
    wait_ready(&mut proc, addr, "/health")?;
    Ok((proc, addr))
}

/// The bench backend: this same executable, `backend --listen ADDR`.
pub fn start_backend(env: &Env) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("backend").arg("--listen").arg(addr.to_string());
    let mut proc = Proc::spawn("backend", &mut cmd, &env.load_cpus, &env.dir)?;
    wait_ready(&mut proc, addr, "/health")?;
    Ok((proc, addr))
}

/// The many-streams backend: this same executable, `stream-backend --listen ADDR`.
pub fn start_stream_backend(env: &Env) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("stream-backend")
        .arg("--listen")
        .arg(addr.to_string());
    let mut proc = Proc::spawn("stream-backend", &mut cmd, &env.load_cpus, &env.dir)?;
    wait_ready(&mut proc, addr, "/health")?;
    Ok((proc, addr))
}

/// Every CPU of the machine.
pub fn all_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The harness pins itself, so ask the system, not this process's affinity.
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..usize::try_from(online).unwrap_or(n).max(1)).collect()
}

/// First line of a command's output (versions for the report).
pub fn version_of(cmd: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(cmd).args(args).output() else {
        return "not found".into();
    };
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.lines().next().unwrap_or("?").trim().to_string()
}
