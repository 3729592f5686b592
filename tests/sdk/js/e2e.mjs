// The official `openai` JavaScript SDK over the operations issue 16 added to Jan Server:
// stored chat completions, the passed-through audio, images and moderations (rerank and
// score, which the SDK lacks, as raw requests), and responses.inputTokens.
//
//   JAN_BASE_URL=http://127.0.0.1:8000/v1 JAN_API_KEY=sk-proj-... JAN_MODEL=m1 node e2e.mjs
//
// Each check that fails throws (exit status 1, the failure on stderr); at the end it prints
// one JSON line naming every operation it exercised, for the Python test to check.
import assert from "node:assert/strict";
import OpenAI, { NotFoundError, BadRequestError, toFile } from "openai";

const baseURL = process.env.JAN_BASE_URL;
const apiKey = process.env.JAN_API_KEY;
const model = process.env.JAN_MODEL;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const done = [];

async function check(name, fn) {
  try {
    await fn();
  } catch (error) {
    error.message = `${name}: ${error.message}`;
    throw error;
  }
  done.push(name);
}

const audio = () => toFile(Buffer.concat([Buffer.from("RIFF"), Buffer.alloc(2000)]), "hello.wav", {
  type: "audio/wav",
});

// --- stored chat completions --------------------------------------------------------
let completionId;
await check("chat.completions.create(store)", async () => {
  const made = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "hello" }],
    store: true,
    metadata: { sdk: "js" },
  });
  assert.ok(made.id.startsWith("chatcmpl-"));
  assert.ok(made.choices[0].message.content);
  completionId = made.id;
});
await check("chat.completions.create(store, stream)", async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "hello again" }],
    store: true,
    metadata: { sdk: "js-stream" },
    stream: true,
  });
  const ids = new Set();
  for await (const chunk of stream) ids.add(chunk.id);
  assert.equal(ids.size, 1);
  const [id] = ids;
  const got = await client.chat.completions.retrieve(id);
  assert.deepEqual(got.metadata, { sdk: "js-stream" });
});
await check("chat.completions.retrieve", async () => {
  const got = await client.chat.completions.retrieve(completionId);
  assert.equal(got.id, completionId);
  assert.deepEqual(got.metadata, { sdk: "js" });
});
await check("chat.completions.list", async () => {
  const listed = [];
  for await (const c of client.chat.completions.list({ model, metadata: { sdk: "js" } })) {
    listed.push(c.id);
  }
  assert.deepEqual(listed, [completionId]);
  const page = await client.chat.completions.list({ limit: 1, order: "asc" });
  assert.equal(page.data.length, 1);
  assert.ok(page.hasNextPage());
});
await check("chat.completions.messages.list", async () => {
  const said = [];
  for await (const m of client.chat.completions.messages.list(completionId)) said.push(m);
  assert.deepEqual(
    said.map((m) => [m.id, m.content]),
    [[`${completionId}-0`, "hello"]],
  );
});
await check("chat.completions.update", async () => {
  const updated = await client.chat.completions.update(completionId, { metadata: { sdk: "js2" } });
  assert.deepEqual(updated.metadata, { sdk: "js2" });
});
await check("chat.completions.delete", async () => {
  const deleted = await client.chat.completions.delete(completionId);
  assert.equal(deleted.deleted, true);
  assert.equal(deleted.id, completionId);
  await assert.rejects(client.chat.completions.retrieve(completionId), NotFoundError);
});

// --- passed through ---------------------------------------------------------------
await check("audio.transcriptions.create", async () => {
  const heard = await client.audio.transcriptions.create({ model, file: await audio() });
  assert.equal(heard.text, `${model} heard 2004 bytes`);
  const stream = await client.audio.transcriptions.create({
    model,
    file: await audio(),
    stream: true,
  });
  const kinds = [];
  for await (const event of stream) kinds.push(event.type);
  assert.equal(kinds.at(-1), "transcript.text.done");
});
await check("audio.translations.create", async () => {
  const translated = await client.audio.translations.create({ model, file: await audio() });
  assert.equal(translated.text, `${model} heard 2004 bytes`);
});
await check("audio.speech.create", async () => {
  const spoken = await client.audio.speech.create({ model, input: "Hi.", voice: "alloy" });
  const bytes = Buffer.from(await spoken.arrayBuffer());
  assert.equal(bytes.subarray(0, 3).toString(), "ID3");
  assert.equal(bytes.length, Number(process.env.JAN_SPEECH_BYTES));
});
await check("images.generate", async () => {
  const images = await client.images.generate({ model, prompt: "a cat" });
  assert.ok(images.data[0].b64_json);
});
await check("images.edit", async () => {
  const image = await toFile(Buffer.from("\x89PNG"), "cat.png", { type: "image/png" });
  const edited = await client.images.edit({ model, image, prompt: "hat" });
  assert.ok(edited.data[0].b64_json);
});
await check("moderations.create", async () => {
  const moderated = await client.moderations.create({ model, input: "kill" });
  assert.equal(moderated.results[0].flagged, true);
  await assert.rejects(client.moderations.create({ model: "nope", input: "x" }), NotFoundError);
});
// Not in the SDK: through its generic request method, as a client would.
await check("POST /rerank", async () => {
  const ranked = await client.post("/rerank", {
    body: { model, query: "red apple", documents: ["blue sky", "red apple pie"] },
  });
  assert.deepEqual(
    ranked.results.map((r) => r.index),
    [1, 0],
  );
});
await check("POST /score", async () => {
  const scored = await client.post("/score", {
    body: { model, text_1: "a", text_2: ["b", "c"] },
  });
  assert.equal(scored.data.length, 2);
});

// --- responses ----------------------------------------------------------------------
await check("responses.inputTokens.count", async () => {
  const counted = await client.responses.inputTokens.count({
    model,
    input: "Tell me a joke.",
    instructions: "Be brief.",
  });
  assert.equal(counted.object, "response.input_tokens");
  assert.equal(counted.input_tokens, Number(process.env.JAN_EXPECTED_TOKENS));
  assert.equal(counted.jan_estimated, undefined);
  const estimated = await client.responses.inputTokens.count({ input: "Tell me a joke." });
  assert.equal(estimated.jan_estimated, true);
  assert.ok(estimated.input_tokens > 0);
  await assert.rejects(
    client.responses.inputTokens.count({ model, input: "x", truncation: "sometimes" }),
    BadRequestError,
  );
});
await check("responses.create(truncation, include)", async () => {
  const made = await client.responses.create({
    model,
    input: "hi",
    truncation: "auto",
    include: ["message.output_text.logprobs"],
    top_logprobs: 1,
  });
  assert.equal(made.truncation, "auto");
  const [first] = made.output[0].content[0].logprobs;
  assert.equal(first.logprob, -0.25);
  assert.deepEqual(
    first.top_logprobs.map((t) => t.token),
    ["t0"],
  );
  const refused = await client.responses
    .create({ model, input: "hi", include: ["reasoning.encrypted_content"] })
    .then(() => null, (error) => error);
  assert.ok(refused instanceof BadRequestError);
  assert.equal(refused.param, "include");
});

console.log(JSON.stringify({ done }));
