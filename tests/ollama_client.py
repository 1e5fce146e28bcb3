"""The official Ollama Python library, unmodified, against a proxy that routes Ollama's API by
model to two backends: the merged model list, a streamed chat (each chunk's arrival time, to
see that it came as the backend sent it), embeddings, and an error in Ollama's shape."""
import json
import sys
import time

import ollama

client = ollama.Client(host=sys.argv[1])
out = {}

out["list"] = [m.model for m in client.list().models]

start = time.monotonic()
chunks = []
for part in client.chat(
    model=sys.argv[2], messages=[{"role": "user", "content": "hi"}], stream=True
):
    chunks.append(
        {
            "at": time.monotonic() - start,
            "content": part.message.content,
            "done": part.done,
            "eval_count": part.eval_count,
        }
    )
out["chat"] = chunks

embedded = client.embed(model=sys.argv[3], input="huge manatees")
out["embed"] = {"model": embedded.model, "embeddings": embedded.embeddings}

try:
    client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    out["error"] = None
except ollama.ResponseError as e:
    out["error"] = {"status": e.status_code, "message": e.error}

print(json.dumps(out))
