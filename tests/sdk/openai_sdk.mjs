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
  (error) => error.status === 422 && error.code === "validation_failed",
);
console.log("openai node sdk: models, completion, stream with usage, errors ok");
