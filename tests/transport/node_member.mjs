// A room member in Node, written from docs/protocol.md alone (version 2, direct TCP): it joins,
// asks the room for every piece it lacks, takes the holder's data frames (acking each), checks
// the bytes against the pinned sha256 and size, reports the piece finished from the room, and
// says goodbye once the room is all done. Usage: node node_member.mjs HOST PORT ROOM.json USER SEED_HEX
// Exits 0 once the room has closed; 1 (with the reason on stderr) on anything unexpected.
import { createHash, createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";

const [host, port, roomPath, user, seedHex] = process.argv.slice(2);
const room = JSON.parse(readFileSync(roomPath, "utf8"));
const key = createPrivateKey({
  key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(seedHex, "hex")]),
  format: "der",
  type: "pkcs8",
});
const pieces = Object.keys(room.content);
const have = new Map(); // piece -> Buffer, once verified
const running = new Map(); // transfer -> {piece, holder, chunks, next}
const asked = new Set();
let seq = 0;

function fail(why) {
  process.stderr.write(`node member: ${why}\n`);
  process.exit(1);
}

const socket = connect(Number(port), host);
function send(message) {
  socket.write(JSON.stringify(message) + "\n");
}
function report(event) {
  send({ type: "report", event: { at: 0, user_id: user, ...event } });
}
function want(piece) {
  asked.add(piece);
  send({ type: "want", piece, form: "archive", offset: 0, avoid: [] });
}

function onMessage(message) {
  switch (message.type) {
    case "challenge": {
      const signed = Buffer.from(`matchlock-join-v1\n${room.room_id}\n${user}\n${message.nonce}`);
      send({ type: "answer", signature: sign(null, signed, key).toString("base64") });
      break;
    }
    case "welcome":
      if (message.protocol !== 2) fail(`the host does not speak protocol 2: ${JSON.stringify(message.protocol)}`);
      seq = message.since + message.events.length;
      for (const piece of pieces) {
        report({ type: "piece_started", piece });
        want(piece);
      }
      break;
    case "event":
      if (message.seq !== seq + 1) fail(`event ${message.seq} after ${seq}`);
      seq = message.seq;
      onEvent(message.event);
      break;
    case "sending":
      running.set(message.transfer, { piece: message.piece, holder: message.holder, chunks: [], next: message.offset });
      break;
    case "unavailable":
      asked.delete(message.piece); // asked again when someone finishes it
      break;
    case "end":
      finish(message.transfer);
      break;
    case "cut":
      if (running.has(message.transfer)) {
        const { piece } = running.get(message.transfer);
        running.delete(message.transfer);
        want(piece);
      }
      break;
    case "peer":
      break;
    case "refused":
      fail(`refused ${message.code}: ${message.reason}`);
      break;
    default:
      fail(`unexpected ${message.type}`);
  }
}

function onEvent(event) {
  if (event.type === "piece_finished" && event.user_id !== user && !have.has(event.piece) && !asked.has(event.piece)) {
    want(event.piece);
  } else if (event.type === "room_all_done") {
    send({ type: "goodbye" });
  } else if (event.type === "room_closed") {
    socket.end();
    process.exit(have.size === pieces.length ? 0 : 1);
  }
}

function onData(frame) {
  const transfer = frame.readUInt32BE(1);
  const offset = Number(frame.readBigUInt64BE(5));
  const state = running.get(transfer);
  if (state === undefined) return; // a transfer cut or replaced: dropped
  if (offset !== state.next) fail(`transfer ${transfer}: offset ${offset}, expected ${state.next}`);
  const payload = frame.subarray(13);
  state.chunks.push(payload);
  state.next += payload.length;
  if (state.next > room.content[state.piece].size) fail(`transfer ${transfer} beyond the size`);
  send({ type: "ack", transfer, offset: state.next });
}

function finish(transfer) {
  const { piece, holder, chunks } = running.get(transfer);
  running.delete(transfer);
  const bytes = Buffer.concat(chunks);
  const digest = createHash("sha256").update(bytes).digest("hex");
  const pinned = room.content[piece];
  if (bytes.length !== pinned.size || digest !== pinned.sha256) {
    fail(`${holder} sent ${bytes.length} bytes whose sha256 is ${digest}, not the pinned ${pinned.sha256}`);
  }
  have.set(piece, bytes);
  report({ type: "piece_finished", piece, source: `room:${holder}` });
}

let buffer = Buffer.alloc(0);
socket.on("data", (data) => {
  buffer = Buffer.concat([buffer, data]);
  for (;;) {
    if (buffer.length === 0) return;
    if (buffer[0] === 0x0a) { // a keepalive: answered with one
      socket.write("\n");
      buffer = buffer.subarray(1);
    } else if (buffer[0] === 0x00) { // a binary frame: 0x00, u32 length, the frame
      if (buffer.length < 5) return;
      const length = buffer.readUInt32BE(1);
      if (buffer.length < 5 + length) return;
      const frame = buffer.subarray(5, 5 + length);
      buffer = buffer.subarray(5 + length);
      if (frame[0] !== 0x01) fail(`a binary frame of tag ${frame[0]}`);
      onData(frame);
    } else {
      const end = buffer.indexOf(0x0a);
      if (end < 0) return;
      const line = buffer.subarray(0, end).toString("utf8");
      buffer = buffer.subarray(end + 1);
      onMessage(JSON.parse(line));
    }
  }
});
socket.on("connect", () => send({ type: "hello", protocol: 2, room, user_id: user, since: 0, serve: false }));
socket.on("error", (error) => fail(String(error)));
socket.on("close", () => fail("the host closed the connection before the room closed"));
