"""The official OpenAI Python SDK, unmodified, as a client with a limit: it sends
requests until one is refused with 429, backs off as the proxy's Retry-After says, and is
then served. Prints each call's time and the SDK's own "Retrying request in N seconds"
notes as JSON."""
import json
import logging
import sys
import time

from openai import OpenAI

retries = []


class Note(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("Retrying request"):
            retries.append(record.args[0])


log = logging.getLogger("openai")
log.setLevel(logging.INFO)
log.addHandler(Note())

# OPENAI_BASE_URL and OPENAI_API_KEY (the client token) come from the environment.
client = OpenAI(max_retries=3)
hi = [{"role": "user", "content": "hi"}]
calls = []
for i in range(int(sys.argv[1])):
    start = time.monotonic()
    answer = client.chat.completions.create(model="llama3", messages=hi)
    calls.append({"seconds": time.monotonic() - start, "content": answer.choices[0].message.content})
print(json.dumps({"calls": calls, "retries": retries}))
