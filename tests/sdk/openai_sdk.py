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
except openai.NotFoundError as error:
    assert error.code == "model_not_found", error.body

try:
    client.chat.completions.create(model=model, messages=[])
    sys.exit("an empty message list was accepted")
except openai.BadRequestError as error:
    assert error.code == "validation_failed", error.body

# Embeddings: the SDK asks for base64 by default and decodes it; floats on request.
embedding_model = os.environ.get("KAREN_EMBEDDING_MODEL", "karen-offline-hash-384")
assert embedding_model in ids, ids
texts = ["Karen remembers.", "A second text.", "Karen remembers."]
decoded = client.embeddings.create(model=embedding_model, input=texts)
assert decoded.object == "list" and decoded.model == embedding_model, decoded
assert [d.index for d in decoded.data] == [0, 1, 2]
vectors = [list(d.embedding) for d in decoded.data]
assert len(vectors[0]) > 0 and all(isinstance(x, float) for x in vectors[0])
assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
floats = client.embeddings.create(model=embedding_model, input=texts[:2], encoding_format="float")
# JSON floats are f32 printed shortest: equal to the base64 values up to f32 precision.
for got, want in zip(floats.data, vectors[:2]):
    assert len(got.embedding) == len(want)
    assert all(abs(a - b) <= 1e-6 for a, b in zip(got.embedding, want)), "float and base64 differ"
single = client.embeddings.create(model=embedding_model, input="A second text.")
assert list(single.data[0].embedding) == vectors[1]
assert decoded.usage.total_tokens == decoded.usage.prompt_tokens

try:
    client.embeddings.create(model="no-such-model", input="hi")
    sys.exit("an unknown embedding model was accepted")
except openai.NotFoundError as error:
    assert error.status_code == 404 and error.code == "model_not_found", error.body

try:
    client.embeddings.create(model=embedding_model, input="")
    sys.exit("an empty input was accepted")
except openai.BadRequestError as error:
    assert error.param == "input[0]", error.body

print("openai python sdk", openai.__version__, ": models, completion, stream with usage, embeddings, errors ok")
