"""Drives Karen's OpenAI-compatible API with the official `openai` Python SDK,
changing nothing but base_url and api_key. Run by .ci/run against a served
binary: KAREN_BASE_URL (…/v1) and KAREN_API_KEY (a tenant API key)."""

import os
import sys

import openai

base_url = os.environ["KAREN_BASE_URL"]
api_key = os.environ["KAREN_API_KEY"]
model = os.environ.get("KAREN_MODEL", "karen-offline-extractive")
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

ids = [m.id for m in client.models.list()]
assert model in ids, ids

completion = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What do you know?"}],
)
assert completion.object == "chat.completion", completion
assert completion.choices[0].message.role == "assistant"
assert completion.choices[0].message.content, completion
assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

pieces, usage = [], None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Stream it."}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
assert "".join(pieces), "no streamed text"
assert usage is not None and usage.total_tokens > 0

try:
    openai.OpenAI(base_url=base_url, api_key="krn_wrong", max_retries=0).models.list()
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    sys.exit("an unknown model was accepted")
except openai.APIStatusError as error:
    assert error.status_code == 422, error
    assert error.body["code"] == "validation_failed", error.body

print("openai python sdk", openai.__version__, ": models, completion, stream with usage, errors ok")
