// A fast OpenAI-compatible mock upstream for the gateway benchmark (and nothing else).
// Answers /v1/models, /v1/chat/completions (JSON or SSE), /v1/completions, /v1/embeddings,
// under both /v1 and /openai/v1. Usage: node mock_upstream.js PORT [STREAM_CHUNKS]
// Model "mock-model" streams its whole answer in one write; "mock-paced" writes each event
// on its own turn of the event loop, so a gateway reads (and relays) them one by one as it
// would a real model's tokens.
"use strict";
const http = require("http");

const port = Number(process.argv[2] || 9000);
const streamChunks = Number(process.argv[3] || 16);
const model = "mock-model";
const created = Math.floor(Date.now() / 1000);

const usage = { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 };
const chatBody = JSON.stringify({
  id: "chatcmpl-mock", object: "chat.completion", created, model,
  choices: [{ index: 0, message: { role: "assistant", content: "Hello from the mock upstream." },
              finish_reason: "stop" }],
  usage,
});
const completionBody = JSON.stringify({
  id: "cmpl-mock", object: "text_completion", created, model,
  choices: [{ index: 0, text: "Hello.", finish_reason: "stop", logprobs: null }], usage,
});
const embeddingBody = JSON.stringify({
  object: "list", model, data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2, 0.3] }],
  usage: { prompt_tokens: 3, total_tokens: 3 },
});
const modelsBody = JSON.stringify({
  object: "list",
  data: [model, "mock-paced"].map((id) => ({ id, object: "model", created, owned_by: "mock" })),
});
function chunk(delta, finish) {
  return "data: " + JSON.stringify({
    id: "chatcmpl-mock", object: "chat.completion.chunk", created, model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  }) + "\n\n";
}
const streamParts = [chunk({ role: "assistant", content: "" }, null)];
for (let i = 0; i < streamChunks; i++) streamParts.push(chunk({ content: "tok " }, null));
streamParts.push(chunk({}, "stop"));
const usageEvent = "data: " + JSON.stringify({
  id: "chatcmpl-mock", object: "chat.completion.chunk", created, model, choices: [], usage,
}) + "\n\n";
const streamBody = streamParts.join("");

function json(res, body) {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function paced(res, parts, i) {
  if (i === parts.length - 1) return res.end(parts[i]);
  res.write(parts[i]);
  setImmediate(paced, res, parts, i + 1);
}

http.createServer((req, res) => {
  const path = req.url.replace(/^\/openai/, "");
  if (req.method === "GET" && path === "/v1/models") return json(res, modelsBody);
  const parts = [];
  req.on("data", (d) => parts.push(d));
  req.on("end", () => {
    if (path === "/v1/chat/completions") {
      const raw = Buffer.concat(parts).toString();
      // Cheap checks instead of JSON.parse: the mock must never be the bottleneck.
      if (raw.includes('"stream":true') || raw.includes('"stream": true')) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        const withUsage = raw.includes('"include_usage":true') || raw.includes('"include_usage": true');
        const tail = (withUsage ? usageEvent : "") + "data: [DONE]\n\n";
        if (raw.includes('"mock-paced"')) return paced(res, [...streamParts, tail], 0);
        res.end(streamBody + tail);
        return;
      }
      return json(res, chatBody);
    }
    if (path === "/v1/completions") return json(res, completionBody);
    if (path === "/v1/embeddings") return json(res, embeddingBody);
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":{"message":"not found","type":"invalid_request_error"}}');
  });
}).listen(port, "127.0.0.1", () => console.log(`mock upstream on ${port}`));
