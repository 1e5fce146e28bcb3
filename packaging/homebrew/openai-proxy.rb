# Homebrew formula for openai-proxy. `packaging/dist` writes a copy with `url` and `sha256` set
# for the source tarball it builds (target/dist/openai-proxy-VERSION.tar.gz); publish both in a
# tap, then: brew install openai-proxy && brew services start openai-proxy
class OpenaiProxy < Formula
  desc "Route OpenAI-API requests to self-hosted whisper.cpp, Ollama and Kokoro"
  homepage "https://github.com/openai-proxy/openai-proxy"
  url "https://github.com/openai-proxy/openai-proxy/releases/download/v0.1.0/openai-proxy-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license all_of: ["MIT", "ISC", "Apache-2.0", "BSD-3-Clause", "CDLA-Permissive-2.0"]
  head "https://github.com/openai-proxy/openai-proxy.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args
    man1.install "man/openai-proxy.1"
    man5.install "man/openai-proxy.toml.5"
    bash_completion.install "contrib/completions/openai-proxy.bash" => "openai-proxy"
    zsh_completion.install "contrib/completions/_openai-proxy"
    fish_completion.install "contrib/completions/openai-proxy.fish"
    pkgshare.install "config/openai-proxy.toml"
  end

  # The config is the user's: written once, from the commented example, and never replaced.
  def post_install
    (etc/"openai-proxy").mkpath
    config = etc/"openai-proxy/config.toml"
    config.write((pkgshare/"openai-proxy.toml").read) unless config.exist?
    (var/"log").mkpath
  end

  def caveats
    <<~EOS
      The configuration is #{etc}/openai-proxy/config.toml (see `man openai-proxy.toml`).
      launchd holds 127.0.0.1:2020 and starts the proxy on the first connection.
      Point OpenAI tools at it: export OPENAI_BASE_URL=http://127.0.0.1:2020/v1
    EOS
  end

  # launchd listens and passes the socket named "http" to the proxy (launch_activate_socket).
  service do
    run [opt_bin/"openai-proxy", "serve", "--config", etc/"openai-proxy/config.toml"]
    sockets http: "tcp://127.0.0.1:2020"
    log_path var/"log/openai-proxy.log"
    error_log_path var/"log/openai-proxy.log"
  end

  test do
    port = free_port
    (testpath/"config.toml").write <<~TOML
      [server]
      listen = ["127.0.0.1:#{port}"]

      [backends.local]
      url = "http://127.0.0.1:9"

      [[route]]
      path = "/v1"
      backend = "local"
    TOML
    assert_match "Configuration is valid", shell_output("#{bin}/openai-proxy check-config #{testpath}/config.toml")
    pid = spawn "#{bin}/openai-proxy", "serve", "--config", "#{testpath}/config.toml"
    begin
      health = nil
      20.times do
        sleep 0.5
        health = shell_output("curl -fsS http://127.0.0.1:#{port}/health 2>&1 || true")
        break if health.include?("ok")
      end
      assert_match "\"status\":\"ok\"", health
    ensure
      Process.kill("TERM", pid)
      Process.wait(pid)
    end
    assert_match version.to_s, shell_output("#{bin}/openai-proxy --version")
  end
end
