"""The official OpenAI Python SDK, unmodified, talking to the proxy (OPENAI_BASE_URL)."""
import json
import sys

import os
import ssl

from openai import DefaultHttpxClient, OpenAI

# OPENAI_BASE_URL and OPENAI_API_KEY come from the environment; an https:// proxy with a
# private CA is trusted as a user would: with an SSL context for that CA.
ca = os.environ.get("TEST_PROXY_CA")
if ca:
    client = OpenAI(http_client=DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)))
else:
    client = OpenAI()
out = {}

out["models"] = [m.id for m in client.models.list()]

chat = client.chat.completions.create(
    model="llama3", messages=[{"role": "user", "content": "hi"}]
)
out["chat"] = chat.choices[0].message.content

stream = client.chat.completions.create(
    model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True
)
out["stream"] = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]

with open(sys.argv[1], "rb") as f:
    out["transcription"] = client.audio.transcriptions.create(model="whisper-1", file=f).text

speech = client.audio.speech.create(model="kokoro", voice="af_heart", input="huge manatees")
out["speech_bytes"] = len(speech.content)
out["speech_head"] = speech.content[:3].decode("latin-1")

print(json.dumps(out))
