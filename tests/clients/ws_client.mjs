// A real web XMPP client (xmpp.js, @xmpp/client from npm; in the browser also Strophe.js
// and Converse.js) over RFC 7395 WebSocket, for
// integration tests: from Node directly, or loaded into headless Chromium (puppeteer-core)
// as a web page would load it. It logs in, sends presence and one chat message, waits for
// a chat message with an expected body, then closes the stream (<close/>).
//
//   node --experimental-websocket ws_client.mjs node|browser \
//        [--library xmppjs|strophe|converse] --modules DIR [--converse DIST] \
//        --service wss://127.0.0.1:PORT/ --domain D --user U --password P \
//        [--resource R] --to JID --body TEXT --expect BODY [--timeout SECS]
//
// DIR is the npm prefix's node_modules (.ci/run installs into target/web-client). Every
// line on stdout is one JSON object with an "event" key ("online", "message", "done" or
// "error"). Exit status: 0 the expected message arrived, 1 something failed, 3 timed out.
// The browser ignores certificate errors (the server's certificate is self-signed); Node
// is given the certificate by the caller (NODE_EXTRA_CA_CERTS) or told to skip the check.

import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function parseArgs(argv) {
  const [mode, ...rest] = argv;
  const o = { mode, resource: "web", timeout: 30 };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, "");
    o[key] = rest[i + 1];
  }
  o.timeout = Number(o.timeout);
  return o;
}

// The session, run where the library lives: in Node, or inside the page (it is sent
// there as source text, so it may use nothing from this module's scope).
async function session(X, o) {
  const { client, xml } = X;
  const events = [];
  const xmpp = client({
    service: o.service,
    domain: o.domain,
    resource: o.resource,
    username: o.user,
    password: o.password,
  });
  // One connection, no retries: a failure must show.
  if (xmpp.reconnect) xmpp.reconnect.stop();
  let failed;
  const got = new Promise((resolve, reject) => {
    failed = reject;
    xmpp.on("stanza", (st) => {
      if (!st.is("message")) return;
      const body = st.getChildText("body");
      events.push({ event: "message", from: st.attrs.from, body });
      if (body === o.expect) resolve();
    });
    xmpp.on("error", (e) => reject(new Error("xmpp error: " + (e && e.message))));
    xmpp.on("offline", () => reject(new Error("offline before the message arrived")));
  });
  got.catch(() => {});
  const timer = new Promise((_, reject) =>
    setTimeout(() => reject(new Error("timeout")), o.timeout * 1000),
  );
  try {
    const address = await Promise.race([xmpp.start(), timer]);
    events.push({ event: "online", jid: address.toString() });
    await xmpp.send(xml("presence"));
    await xmpp.send(
      xml("message", { to: o.to, type: "chat", id: "ws-1" }, xml("body", {}, o.body)),
    );
    await Promise.race([got, timer]);
    xmpp.removeAllListeners("offline");
    await xmpp.stop();
    events.push({ event: "done" });
    return { ok: true, events };
  } catch (e) {
    failed(e);
    try {
      xmpp.removeAllListeners("offline");
      await xmpp.stop();
    } catch {}
    return { ok: false, timeout: String(e && e.message) === "timeout", error: String(e), events };
  }
}

// The same with Strophe.js (strophe.js from npm, the XMPP layer of Converse.js), in the
// page only: its own login (SASL SCRAM with WebCrypto), bind, handlers.
async function stropheSession(S, o) {
  // The bundle's exports, or (as it also sets them) the Strophe namespace and globals.
  const Strophe = S.Strophe || S;
  const $msg = S.$msg || globalThis.$msg;
  const $pres = S.$pres || globalThis.$pres;
  const events = [];
  const conn = new Strophe.Connection(o.service);
  return await new Promise((resolve) => {
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, timeout: true, error: "timeout", events }),
      o.timeout * 1000,
    );
    conn.addHandler(
      (st) => {
        const body = st.getElementsByTagName("body")[0];
        const text = body ? body.textContent : null;
        events.push({ event: "message", from: st.getAttribute("from"), body: text });
        if (text === o.expect) {
          conn.disconnect("done");
          events.push({ event: "done" });
          finish({ ok: true, events });
          return false;
        }
        return true;
      },
      null,
      "message",
    );
    conn.connect(`${o.user}@${o.domain}/${o.resource}`, o.password, (status, cond) => {
      const S = Strophe.Status;
      if (status === S.CONNECTED) {
        events.push({ event: "online", jid: conn.jid });
        conn.send($pres());
        conn.send($msg({ to: o.to, type: "chat", id: "ws-1" }).c("body").t(o.body));
      } else if (
        [S.AUTHFAIL, S.CONNFAIL, S.ERROR, S.CONNTIMEOUT].includes(status) ||
        (status === S.DISCONNECTED && !done)
      ) {
        finish({ ok: false, error: `Strophe status ${status} ${cond || ""}`, events });
      }
    });
  });
}

// Converse.js itself (its release bundle), a whole web chat client: logged in by its own
// settings, a chat opened and a message sent through its API, messages heard through its
// events. Runs in the page, which has loaded converse.min.js.
function converseSession(o) {
  return new Promise((resolve) => {
    const events = [];
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, timeout: true, error: "timeout", events }),
      o.timeout * 1000,
    );
    window.converse.plugins.add("hearth-test", {
      initialize() {
        const api = this._converse.api;
        api.listen.on("connected", async () => {
          events.push({ event: "online", jid: api.connection.get().jid });
          try {
            const chat = await api.chats.open(o.to, {}, true);
            await chat.sendMessage({ body: o.body });
          } catch (e) {
            finish({ ok: false, error: "sending: " + e, events });
          }
        });
        api.listen.on("message", (data) => {
          const a = data.attrs || {};
          if (!a.body) return;
          events.push({ event: "message", from: a.from, body: a.body });
          if (a.body === o.expect) {
            events.push({ event: "done" });
            api.user.logout().catch(() => {});
            finish({ ok: true, events });
          }
        });
        api.listen.on("disconnected", () => {
          if (!done) finish({ ok: false, error: "disconnected", events });
        });
      },
    });
    window.converse
      .initialize({
        websocket_url: o.service,
        discover_connection_methods: false,
        jid: `${o.user}@${o.domain}/${o.resource}`,
        password: o.password,
        auto_login: true,
        auto_reconnect: false,
        whitelisted_plugins: ["hearth-test"],
        view_mode: "fullscreen",
        allow_non_roster_messaging: true,
        i18n: "en",
        play_sounds: false,
        show_desktop_notifications: false,
        loglevel: "warn",
      })
      .catch((e) => finish({ ok: false, error: "initialize: " + e, events }));
  });
}

async function inNode(o) {
  const X = await import(pathToFileURL(path.join(o.modules, "@xmpp/client/index.js")).href);
  return session(X, o);
}

async function inBrowser(o) {
  const require = createRequire(path.join(o.modules, "noop.js"));
  const puppeteer = require("puppeteer-core");
  const browser = await puppeteer.launch({
    executablePath: o.chromium || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--ignore-certificate-errors",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--allow-file-access-from-files",
    ],
  });
  let dir = null;
  try {
    const page = await browser.newPage();
    // A page from a file: a secure context (about:blank is not), as xmpp.js needs for
    // crypto.randomUUID, like a web client served over https.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "hearth-web-"));
    const html = path.join(dir, "index.html");
    fs.writeFileSync(html, "<!doctype html><title>hearth web client test</title>");
    await page.goto(pathToFileURL(html).href);
    if (o.library === "converse") {
      // Its release bundle, unpacked by the caller (`npm pack converse.js`): --converse DIR.
      // By URL, so that it finds its lazily loaded parts beside it.
      const url = (f) => pathToFileURL(path.join(o.converse, f)).href;
      await page.addStyleTag({ url: url("converse.min.css") });
      // An ES module (it uses import.meta); Chromium loads modules from file: URLs only
      // with --allow-file-access-from-files.
      await page.addScriptTag({ url: url("converse.min.js"), type: "module" });
      await page.waitForFunction(() => window.converse !== undefined, { timeout: 10000 });
      const ua = await page.evaluate(() => navigator.userAgent);
      emit("browser", { user_agent: ua });
      return await page.evaluate(
        async (src, opts) => {
          const run = eval("(" + src + ")");
          return run(opts);
        },
        converseSession.toString(),
        o,
      );
    }
    page.on("console", (m) => process.stderr.write(`[page] ${m.text()}\n`));
    page.on("pageerror", (e) => process.stderr.write(`[page error] ${e}\n`));
    const strophe = o.library === "strophe";
    const bundle = strophe ? "strophe.js/dist/strophe.umd.min.js" : "@xmpp/client/dist/xmpp.min.js";
    await page.addScriptTag({ path: path.join(o.modules, bundle) });
    const ua = await page.evaluate(() => navigator.userAgent);
    emit("browser", { user_agent: ua });
    return await page.evaluate(
      async (src, lib, opts) => {
        const run = eval("(" + src + ")");
        return run(window[lib], opts);
      },
      (strophe ? stropheSession : session).toString(),
      strophe ? "Strophe" : "XMPP",
      o,
    );
  } finally {
    await browser.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

const o = parseArgs(process.argv.slice(2));
let result;
try {
  result = o.mode === "browser" ? await inBrowser(o) : await inNode(o);
} catch (e) {
  result = { ok: false, error: String(e && e.stack ? e.stack : e), events: [] };
}
for (const ev of result.events) emit(ev.event, ev);
if (!result.ok) emit("error", { error: result.error });
process.exit(result.ok ? 0 : result.timeout ? 3 : 1);
