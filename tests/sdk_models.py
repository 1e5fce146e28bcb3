"""The official OpenAI Python SDK, unmodified, against a proxy that routes by model: local
and OpenAI models behind one OPENAI_BASE_URL, and whisper-1 answered by an alias."""
import json
import sys

from openai import OpenAI

client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
hi = [{"role": "user", "content": "hi"}]
out = {}

out["models"] = [m.id for m in client.models.list()]
out["retrieve"] = client.models.retrieve("gpt-4o-mini").id

out["local"] = client.chat.completions.create(model="llama3.2", messages=hi).choices[0].message.content
out["cloud"] = client.chat.completions.create(model="gpt-4o", messages=hi).choices[0].message.content

stream = client.chat.completions.create(model="qwen2.5:7b", messages=hi, stream=True)
out["stream"] = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]

with open(sys.argv[1], "rb") as f:
    out["transcription"] = client.audio.transcriptions.create(model="whisper-1", file=f).text

print(json.dumps(out))
