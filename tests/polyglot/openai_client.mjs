// The official `openai` npm client against a running Corral's /v1: chat (streamed and not) and embeddings.
// Prints one JSON object with what came back, for the Python test to check.
import OpenAI from 'openai';

const [baseURL, chatModel, embedModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'ollama', maxRetries: 0 });

const out = {};
const messages = [{ role: 'user', content: 'hi' }];
out.chat = await client.chat.completions.create({ model: chatModel, messages, max_tokens: 6, temperature: 0 });
let text = '';
let finish = null;
for await (const chunk of await client.chat.completions.create({
  model: chatModel, messages, max_tokens: 6, temperature: 0, stream: true,
})) {
  text += chunk.choices[0]?.delta?.content ?? '';
  finish = chunk.choices[0]?.finish_reason ?? finish;
}
out.streamText = text;
out.streamFinish = finish;
out.embeddings = await client.embeddings.create({ model: embedModel, input: ['hello world', 'the sea'] });
try {
  await client.chat.completions.create({ model: 'no-such-model', messages });
} catch (err) {
  out.missing = { status: err.status, type: err.error?.type, message: err.error?.message };
}
console.log(JSON.stringify(out));
