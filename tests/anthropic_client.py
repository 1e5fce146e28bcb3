"""The official Anthropic Python SDK, unmodified, talking to the proxy (ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY). `messages LOCAL CLOUD`: a message from each model, a streamed one from the
cloud model (each event with the time the SDK gave it), and a token count. `errors MODEL...`: the
SDK's exception for a message from each model. Prints what it got as JSON."""
import json
import sys
import time

import anthropic

# No retries: each request reaches the proxy once, and an error comes back at once.
client = anthropic.Anthropic(max_retries=0)
ASK = [{"role": "user", "content": "say hi"}]
# The API version it sends with each request.
out = {"version": client.default_headers["anthropic-version"]}

if sys.argv[1] == "messages":
    local, cloud = sys.argv[2], sys.argv[3]
    for name, model in [("local", local), ("cloud", cloud)]:
        m = client.messages.create(model=model, max_tokens=64, messages=ASK)
        out[name] = {"text": m.content[0].text, "model": m.model, "stop": m.stop_reason}

    # The beta client with the query Claude Code sends (/v1/messages?beta=true), which this
    # SDK leaves out. A first stream warms the SDK up: the first event of each type takes it a
    # moment to build its model, which would hold back the next events. The second is timed.
    def stream():
        return client.beta.messages.stream(
            model=cloud, max_tokens=64, messages=ASK, extra_query={"beta": "true"},
            betas=["interleaved-thinking-2025-05-14"],
        )
    with stream() as warm:
        warm.until_done()
    start = time.monotonic()
    events = []
    with stream() as timed:
        for event in timed:
            text = getattr(getattr(event, "delta", None), "text", None)
            events.append({"type": event.type, "text": text, "at": time.monotonic() - start})
        final = timed.get_final_message()
    out["stream"] = events
    out["final"] = {"text": final.content[0].text, "output_tokens": final.usage.output_tokens}

    out["count"] = client.messages.count_tokens(model=cloud, messages=ASK).input_tokens
elif sys.argv[1] == "errors":
    for model in sys.argv[2:]:
        try:
            client.messages.create(model=model, max_tokens=64, messages=ASK)
            out[model] = "no error"
        except anthropic.APIStatusError as e:
            out[model] = {
                "class": type(e).__name__,
                "not_found": isinstance(e, anthropic.NotFoundError),
                "server_error": isinstance(e, anthropic.InternalServerError),
                "status": e.status_code,
                "body": e.body,
                "message": e.message,
            }

print(json.dumps(out))
