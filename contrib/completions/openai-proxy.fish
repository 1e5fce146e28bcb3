# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_openai_proxy_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_openai_proxy_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_openai_proxy_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_openai_proxy_using_subcommand
    set -l cmd (__fish_openai_proxy_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -s V -l version -d 'Print version'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "serve" -d 'Run the proxy in the foreground (the default)'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "check-config" -d 'Validate the config exactly as `serve` would, without starting anything'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "check-endpoints" -d 'Test each route of a running proxy with real requests, and report truthfully'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "init" -d 'Write the example config where the service looks for it, and look for local services'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "start" -d 'Start serving through the service manager'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "stop" -d 'Stop the service and its socket'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "restart" -d 'Restart the service (systemd keeps the socket open, so no connection is refused)'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "reload" -d 'Make the running service re-read its configuration (SIGHUP) without dropping a request'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "status" -d 'Show the service manager\'s view of the service and what /health answers'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "enable" -d 'Start serving now and at every boot (systemd: enable --now openai-proxy.socket)'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "disable" -d 'Stop serving and no longer start at boot'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "enable-backend" -d 'Have systemd start a model server at the first request and stop it when idle'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "disable-backend" -d 'Undo enable-backend: stop the backend\'s server and socket, remove its drop-ins'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "models" -d 'List the models of a running proxy with their state, requests and tokens; load or unload one'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "client" -d 'Make, list and remove named client tokens (client add|list|remove), as htpasswd does for a web server\'s users'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "wait-ready" -d 'Wait until a server answers HTTP at URL (ExecStartPost= of an on-demand model server)'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "generate" -d 'Print the man page openai-proxy(1) to stdout (`generate man`), made from this command line\'s own definitions, as the packages ship it'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "container" -d 'Run the proxy in a Podman container instead of as a service (start, stop, status, logs, enable, disable)'
complete -c openai-proxy -n "__fish_openai_proxy_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand serve" -s l -l listen -d 'Listen on ADDR instead of server.listen; repeat for several' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand serve" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-config" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-config" -s v -l verbose -d 'Also print the resolved configuration'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l url -d 'The proxy\'s base URL, e.g. http://127.0.0.1:2020 or https://proxy.lan:2020' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l ca-file -d 'CA certificates (PEM) to check an https:// proxy\'s certificate against, besides the bundled web roots (e.g. the private CA that signed server.tls_cert)' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l only -d 'Run only these checks (several after one --only, comma-separated, or --only repeated)' -r -f -a "health\t'GET /health: the proxy itself answers {"status":"ok"}; then each server of a pool'
models\t'GET /v1/models: a JSON list of models'
chat\t'POST /v1/chat/completions: one JSON answer'
chat-stream\t'POST /v1/chat/completions with "stream": true: server-sent events ending in [DONE]'
speech\t'POST /v1/audio/speech: audio'
transcription\t'POST /v1/audio/transcriptions: JSON with the text'"
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l timeout -d 'How long each check\'s request may take, from connecting to the last byte of the response (e.g. "30s", "2m")' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l chat-model -d 'The model for the chat checks' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l model -d 'Also check that the model NAME reaches the backend the config sends it to (repeat for several)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -l api -d 'Also check a client API beyond Chat Completions (several after one --api, comma-separated, or --api repeated)' -r -f -a "ollama\t'Ollama\'s native API: /api/tags, /api/chat'
anthropic\t'Anthropic\'s Messages API: /v1/messages'
responses\t'OpenAI\'s Responses API: /v1/responses'"
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -s v -l verbose -d 'Also print each response body (text cut after 1000 characters; audio as its size)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -s H -l headers -d 'Also print each response\'s headers (credentials redacted)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand check-endpoints" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand init" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand init" -l user -d 'Write the per-user config (~/.config/openai-proxy/config.toml) for the user service, instead of /etc/openai-proxy/config.toml'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand init" -l force -d 'Replace an existing config file (the old one is kept beside it as config.toml.bak)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand start" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand start" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand start" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand stop" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand stop" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand stop" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand stop" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand restart" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand restart" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand restart" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand restart" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand reload" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand reload" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand reload" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand status" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand status" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand status" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable" -l user -d 'Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of the system one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable" -s v -l verbose -d 'Print each service-manager command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l exec -d 'The server\'s command line, e.g. "llama-server -m /models/qwen.gguf --port $PORT"' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l port -d 'Where systemd listens for the proxy: the port of the backend\'s url in the proxy\'s config' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l server-port -d 'Where the server listens (127.0.0.1, $PORT in --exec). Default: --port + 10000' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l idle -d 'Stop the server after this long without a connection (systemd-socket-proxyd --exit-idle-time)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l conflicts -d 'Never run this backend\'s server at the same time as OTHER\'s (one GPU); repeat for several' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l ready-path -d 'The path wait-ready asks for to know the server is up (default /)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -l user -d 'Use the per-user service manager and ~/.config/systemd/user/ instead of the system ones'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -s n -l dry-run -d 'Print the files and commands, change nothing'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -s v -l verbose -d 'Print each systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand enable-backend" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable-backend" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable-backend" -l user -d 'Use the per-user service manager and ~/.config/systemd/user/ instead of the system ones'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable-backend" -s n -l dry-run -d 'Print the files and commands, change nothing'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable-backend" -s v -l verbose -d 'Print each systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand disable-backend" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -l url -d 'The proxy\'s base URL, e.g. http://127.0.0.1:2020 (a trailing /v1 is removed)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -l timeout -d 'How long to wait for the proxy\'s answer: a load waits for the model\'s server to come up, an unload for the requests in flight to end (e.g. "30s", "10m")' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -f -a "load" -d 'Start the server of an on-demand model now (POST /models/load)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -f -a "unload" -d 'Stop the server of an on-demand model (POST /models/unload)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and not __fish_seen_subcommand_from load unload help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from load" -l url -d 'The proxy\'s base URL, e.g. http://127.0.0.1:2020 (a trailing /v1 is removed)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from load" -l timeout -d 'How long to wait for the proxy\'s answer: a load waits for the model\'s server to come up, an unload for the requests in flight to end (e.g. "30s", "10m")' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from load" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from load" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from unload" -l url -d 'The proxy\'s base URL, e.g. http://127.0.0.1:2020 (a trailing /v1 is removed)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from unload" -l timeout -d 'How long to wait for the proxy\'s answer: a load waits for the model\'s server to come up, an unload for the requests in flight to end (e.g. "30s", "10m")' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from unload" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from unload" -l force -d 'Stop it at once, cutting the requests in flight'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from unload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from help" -f -a "load" -d 'Start the server of an on-demand model now (POST /models/load)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from help" -f -a "unload" -d 'Stop the server of an on-demand model (POST /models/unload)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand models; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Make a client token: print it once, store only its hash, with the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'List the named clients, with where each token\'s hash is and the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'Remove a client: its lines in the tokens file and its [clients.NAME] table'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l models -d 'Let it ask only for these models: a name, or a glob with \'*\' (repeat for several). Default: every model' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l routes -d 'Let it use only the paths under these prefixes, e.g. /v1/chat (repeat for several). Default: every path' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l server-key-for -d 'Let it use the server-side key (api_key_*) of this backend only (repeat for several). Default: of every backend' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l max-concurrent -d 'Requests it may have in flight at once (a stream until it ends)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l requests-per-minute -d 'Requests it may make a minute' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l tokens-per-minute -d 'Tokens (prompt and completion) it may use a minute' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l tokens-per-day -d 'Tokens (prompt and completion) it may use a day (UTC)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -l no-server-key -d 'Let it use no backend\'s server-side key (backends_with_server_key = [])'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from list" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from remove" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "add" -d 'Make a client token: print it once, store only its hash, with the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the named clients, with where each token\'s hash is and the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a client: its lines in the tokens file and its [clients.NAME] table'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand client; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand wait-ready" -l timeout -d 'Give up after this long (exit status 1)' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand wait-ready" -l pid -d 'Give up (exit status 1) as soon as this process is gone: the server\'s, $MAINPID in ExecStartPost=, so that a server that fails to start is not waited for' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand wait-ready" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand wait-ready" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand completions" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand generate" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "start" -d 'Start the container in the background (replacing a running one of the same name)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "stop" -d 'Stop the container (and remove it: start creates it afresh)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "status" -d 'Show the container\'s state and what /health answers'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "logs" -d 'Show the container\'s log (the proxy logs to stderr)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "enable" -d 'Install a Podman quadlet and start the container now and at every boot (or login)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "disable" -d 'Stop the quadlet\'s service and remove the quadlet that enable installed'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and not __fish_seen_subcommand_from start stop status logs enable disable help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from start" -l image -d 'The image to run' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from start" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from start" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from stop" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from stop" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from status" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from status" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from logs" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new log lines as they come'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from logs" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from enable" -l image -d 'The image the quadlet runs' -r
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from enable" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from enable" -l user -d 'Use the per-user service manager and ~/.config/containers/systemd/ (rootless Podman) instead of the system ones'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from enable" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from disable" -s c -l config -d 'Use this config file instead of looking one up' -r -F
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from disable" -l user -d 'Use the per-user service manager and ~/.config/containers/systemd/ (rootless Podman) instead of the system ones'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from disable" -s v -l verbose -d 'Print each podman and systemctl command before running it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start the container in the background (replacing a running one of the same name)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop the container (and remove it: start creates it afresh)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show the container\'s state and what /health answers'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Show the container\'s log (the proxy logs to stderr)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Install a Podman quadlet and start the container now and at every boot (or login)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Stop the quadlet\'s service and remove the quadlet that enable installed'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "serve" -d 'Run the proxy in the foreground (the default)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "check-config" -d 'Validate the config exactly as `serve` would, without starting anything'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "check-endpoints" -d 'Test each route of a running proxy with real requests, and report truthfully'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "init" -d 'Write the example config where the service looks for it, and look for local services'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "start" -d 'Start serving through the service manager'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "stop" -d 'Stop the service and its socket'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "restart" -d 'Restart the service (systemd keeps the socket open, so no connection is refused)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "reload" -d 'Make the running service re-read its configuration (SIGHUP) without dropping a request'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "status" -d 'Show the service manager\'s view of the service and what /health answers'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "enable" -d 'Start serving now and at every boot (systemd: enable --now openai-proxy.socket)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "disable" -d 'Stop serving and no longer start at boot'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "enable-backend" -d 'Have systemd start a model server at the first request and stop it when idle'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "disable-backend" -d 'Undo enable-backend: stop the backend\'s server and socket, remove its drop-ins'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "models" -d 'List the models of a running proxy with their state, requests and tokens; load or unload one'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "client" -d 'Make, list and remove named client tokens (client add|list|remove), as htpasswd does for a web server\'s users'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "wait-ready" -d 'Wait until a server answers HTTP at URL (ExecStartPost= of an on-demand model server)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "generate" -d 'Print the man page openai-proxy(1) to stdout (`generate man`), made from this command line\'s own definitions, as the packages ship it'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "container" -d 'Run the proxy in a Podman container instead of as a service (start, stop, status, logs, enable, disable)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config check-endpoints init start stop restart reload status enable disable enable-backend disable-backend models client wait-ready completions generate container help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from models" -f -a "load" -d 'Start the server of an on-demand model now (POST /models/load)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from models" -f -a "unload" -d 'Stop the server of an on-demand model (POST /models/unload)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "add" -d 'Make a client token: print it once, store only its hash, with the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "list" -d 'List the named clients, with where each token\'s hash is and the client\'s scope and limits'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from client" -f -a "remove" -d 'Remove a client: its lines in the tokens file and its [clients.NAME] table'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "start" -d 'Start the container in the background (replacing a running one of the same name)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "stop" -d 'Stop the container (and remove it: start creates it afresh)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "status" -d 'Show the container\'s state and what /health answers'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "logs" -d 'Show the container\'s log (the proxy logs to stderr)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "enable" -d 'Install a Podman quadlet and start the container now and at every boot (or login)'
complete -c openai-proxy -n "__fish_openai_proxy_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "disable" -d 'Stop the quadlet\'s service and remove the quadlet that enable installed'
