"""The official OpenAI Python SDK, unmodified, on the Responses API through the proxy
(OPENAI_BASE_URL, OPENAI_API_KEY). `stream MODEL`: a streamed response, each typed event with
the time the SDK gave it. `follow MODEL`: a response, a follow-up to it (`previous_response_id`),
both retrieved, the first deleted. Prints what it got as JSON."""
import json
import sys
import time

from openai import OpenAI

client = OpenAI(max_retries=0)
mode, model = sys.argv[1], sys.argv[2]
out = {}

if mode == "stream":
    # A first stream warms the SDK up: the first event of each type takes it a moment (about
    # 0.2 s) to build its model, which would hold back the next events. The second is timed.
    for _ in client.responses.create(model=model, input="say hi", stream=True):
        pass
    start = time.monotonic()
    events = []
    for event in client.responses.create(model=model, input="say hi", stream=True):
        delta = event.delta if event.type == "response.output_text.delta" else None
        events.append({"type": event.type, "seq": event.sequence_number, "delta": delta,
                       "at": time.monotonic() - start})
        if event.type == "response.completed":
            out["completed"] = {"id": event.response.id, "text": event.response.output_text,
                                "output_tokens": event.response.usage.output_tokens}
    out["events"] = events
elif mode == "follow":
    first = client.responses.create(model=model, input="say hi")
    second = client.responses.create(model=model, input="and again",
                                     previous_response_id=first.id)
    out["first"] = {"id": first.id, "text": first.output_text}
    out["second"] = {"id": second.id, "text": second.output_text,
                     "previous": second.previous_response_id}
    out["retrieved"] = [client.responses.retrieve(r.id).id for r in (first, second)]
    client.responses.delete(first.id)
    out["deleted"] = first.id

print(json.dumps(out))
