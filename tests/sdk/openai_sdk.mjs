// Drives Karen's OpenAI-compatible API with the official `openai` Node SDK,
// changing nothing but baseURL and apiKey. Run by .ci/run against a served
// binary: KAREN_BASE_URL (…/v1) and KAREN_API_KEY (a tenant API key).
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.KAREN_BASE_URL;
const apiKey = process.env.KAREN_API_KEY;
const model = process.env.KAREN_MODEL ?? "karen-offline-extractive";
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
assert.ok(ids.includes(model), ids.join(","));

const completion = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "What do you know?" }],
});
assert.equal(completion.object, "chat.completion");
assert.ok(completion.choices[0].message.content);

let text = "";
let usage = null;
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Stream it." }],
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) text += choice.delta.content ?? "";
}
assert.ok(text.length > 0);
assert.ok(usage && usage.total_tokens > 0);

await assert.rejects(
  new OpenAI({ baseURL, apiKey: "krn_wrong", maxRetries: 0 }).models.list(),
  (error) => error instanceof OpenAI.AuthenticationError,
);
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
  (error) => error instanceof OpenAI.NotFoundError && error.code === "model_not_found",
);
await assert.rejects(
  client.chat.completions.create({ model, messages: [] }),
  (error) => error instanceof OpenAI.BadRequestError && error.code === "validation_failed",
);
// Embeddings: the SDK asks for base64 by default and decodes it; floats on request.
const embeddingModel = process.env.KAREN_EMBEDDING_MODEL ?? "karen-offline-hash-384";
assert.ok(ids.includes(embeddingModel), ids.join(","));
const texts = ["Karen remembers.", "A second text.", "Karen remembers."];
const decoded = await client.embeddings.create({ model: embeddingModel, input: texts });
assert.equal(decoded.object, "list");
assert.equal(decoded.model, embeddingModel);
assert.deepEqual(decoded.data.map((d) => d.index), [0, 1, 2]);
const vectors = decoded.data.map((d) => Array.from(d.embedding));
assert.ok(vectors[0].length > 0 && vectors[0].every((x) => typeof x === "number"));
assert.deepEqual(vectors[0], vectors[2]);
assert.notDeepEqual(vectors[0], vectors[1]);
const floats = await client.embeddings.create({ model: embeddingModel, input: texts.slice(0, 2), encoding_format: "float" });
// JSON floats are f32 printed shortest: equal to the base64 values up to f32 precision.
floats.data.forEach((d, i) => {
  assert.equal(d.embedding.length, vectors[i].length);
  assert.ok(d.embedding.every((x, j) => Math.abs(x - vectors[i][j]) <= 1e-6), "float and base64 differ");
});
assert.equal(decoded.usage.total_tokens, decoded.usage.prompt_tokens);
await assert.rejects(
  client.embeddings.create({ model: "no-such-model", input: "hi" }),
  (error) => error instanceof OpenAI.NotFoundError && error.code === "model_not_found",
);
await assert.rejects(
  client.embeddings.create({ model: embeddingModel, input: "" }),
  (error) => error instanceof OpenAI.BadRequestError && error.param === "input[0]",
);
console.log("openai node sdk: models, completion, stream with usage, embeddings, errors ok");
