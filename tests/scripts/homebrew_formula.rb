# Runs packaging/homebrew/openai-proxy.rb without Homebrew (there is none on Linux CI): a
# minimal stand-in for the Formula DSL loads the formula, runs `install` (with `cargo install`
# replaced by copying an already-built binary), `post_install` twice, evaluates the `service`
# block, and runs the formula's own `test do` block against that binary. It prints what each
# step did, one fact per line; tests/machine/packaging.rs checks them. What it cannot tell: whether
# real Homebrew accepts the formula (`brew audit --strict`, `brew install --build-from-source`).
#
# Usage: ruby homebrew_formula.rb FORMULA SOURCE_DIR PREFIX BINARY
require "fileutils"
require "open3"
require "pathname"
require "socket"
require "tmpdir"

FORMULA, SOURCE, PREFIX, BINARY = ARGV.map { |a| Pathname(a).expand_path }
abort "usage: ruby homebrew_formula.rb FORMULA SOURCE_DIR PREFIX BINARY" unless BINARY

class Pathname
  # Homebrew's Pathname#install: copy into this directory; a Hash renames.
  def install(*sources)
    mkpath
    sources.each do |s|
      (s.is_a?(Hash) ? s : { s => File.basename(s.to_s) }).each do |from, to|
        src = Pathname.pwd / from.to_s
        raise "install: #{from} does not exist in the source tree" unless src.file?
        FileUtils.cp(src, self / to.to_s)
        puts "installed #{(self / to.to_s).relative_path_from(PREFIX)}"
      end
    end
  end
end

# The `service do` block's DSL: records what it is given.
class ServiceSpec
  attr_reader :fields

  def initialize(formula)
    @formula = formula
    @fields = {}
  end

  def method_missing(name, *args, **kw)
    return @formula.send(name, *args) if @formula.respond_to?(name)

    @fields[name] = kw.empty? ? args : (args + [kw])
  end

  def respond_to_missing?(*) = true
end

class Formula
  class << self
    attr_reader :fields, :service_block, :test_block, :deps

    def set(name, value)
      (@fields ||= {})[name] = value
    end

    def desc(v) = set(:desc, v)
    def homepage(v) = set(:homepage, v)
    def url(v, **) = set(:url, v)
    def sha256(v) = set(:sha256, v)
    def license(v) = set(:license, v)
    def head(v, **) = set(:head, v)
    def depends_on(v) = (@deps ||= []) << v
    def service(&b) = @service_block = b
    def test(&b) = @test_block = b
  end

  def prefix = PREFIX
  def bin = PREFIX / "bin"
  def opt_bin = PREFIX / "opt/bin"
  def man1 = PREFIX / "share/man/man1"
  def man5 = PREFIX / "share/man/man5"
  def bash_completion = PREFIX / "etc/bash_completion.d"
  def zsh_completion = PREFIX / "share/zsh/site-functions"
  def fish_completion = PREFIX / "share/fish/vendor_completions.d"
  def pkgshare = PREFIX / "share/openai-proxy"
  def etc = PREFIX / "etc"
  def var = PREFIX / "var"
  def testpath = @testpath
  def version = `#{BINARY} --version`.split.last
  def std_cargo_args = ["--locked", "--root", prefix.to_s, "--path", "."]

  # `system "cargo", "install", ...`: the binary is already built; install it instead.
  def system(*args)
    puts "system #{args.join(" ")}"
    raise "expected cargo install #{std_cargo_args.join(" ")}" unless args == ["cargo", "install", *std_cargo_args]

    bin.mkpath
    FileUtils.cp(BINARY, bin / "openai-proxy")
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def shell_output(cmd, expected = 0)
    out, status = Open3.capture2e(cmd)
    raise "`#{cmd}` exited #{status.exitstatus}, not #{expected}: #{out}" unless status.exitstatus == expected

    out
  end

  def assert_match(pattern, text)
    ok = pattern.is_a?(Regexp) ? text.match?(pattern) : text.include?(pattern)
    raise "assert_match: #{pattern.inspect} not in #{text.inspect}" unless ok
  end

  def run_test
    Dir.mktmpdir do |dir|
      @testpath = Pathname(dir)
      Dir.chdir(dir) { instance_eval(&self.class.test_block) }
    end
  end
end

load FORMULA.to_s
klass = Formula.subclasses.first || abort("no Formula subclass in #{FORMULA}")
formula = klass.new
klass.fields.each { |k, v| puts "field #{k} #{v.inspect}" }
puts "depends_on #{klass.deps.inspect}"

Dir.chdir(SOURCE) { formula.install }
FileUtils.mkdir_p(PREFIX / "opt")
FileUtils.ln_sf(PREFIX / "bin", PREFIX / "opt/bin")

formula.post_install
config = PREFIX / "etc/openai-proxy/config.toml"
puts "post_install wrote etc/openai-proxy/config.toml" if config.file?
File.write(config, "# edited by the user\n")
formula.post_install
puts "post_install kept the edited config" if File.read(config) == "# edited by the user\n"

spec = ServiceSpec.new(formula)
spec.instance_eval(&klass.service_block)
spec.fields.each { |k, v| puts "service #{k} #{v.map(&:to_s).inspect}" }
puts "caveats #{formula.caveats.lines.first.strip}"

formula.run_test
puts "test block passed"
