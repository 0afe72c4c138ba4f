// The guard's console, live: applies the daemon's server-sent events to the page. Every value
// goes in as text (textContent), never as markup. No build step, no libraries.
"use strict";
(function () {
  const $ = (s, el) => (el || document).querySelector(s);
  // Times the server wrote as unix ms, in the booth's local time.
  document.querySelectorAll("time[data-ms]").forEach((t) => {
    t.textContent = new Date(Number(t.dataset.ms)).toLocaleString("zh-CN", { hour12: false });
  });
  if (!$("#lanes")) return;
  const csrf = $("meta[name=csrf]").content;
  const lanes = Array.from(document.querySelectorAll("article.lane"));
  const KIND = { resident: "住户", visitor: "访客", credential: "卡/码", plate: "车牌", unknown: "未识别" };
  const REASON = {
    ok: "通过", fever: "体温异常", invalid_reading: "测温无效", no_temperature: "未测温",
    unknown_subject: "未登记", expired: "已过期", quarantined: "居家隔离", quota_exceeded: "超出外出次数",
    lockdown: "封控", blacklisted: "黑名单", low_confidence: "识别置信度低", anti_passback: "防反潜",
    fire_mode: "消防放行", remote_open: "远程/人工开闸", device_fault: "设备故障",
    clock_unsynced: "时钟未同步",
  };
  const ALARM = {
    fever: "体温异常", repeated_unknown: "陌生人多次尝试", device_offline: "设备离线",
    command_uncertain: "闸门未确认", tamper: "非法开门", fire_mode: "消防模式", storage_loss: "存储故障",
    outbox_evicted: "记录被丢弃", registry_refused: "名单未接受", quarantine_exit: "隔离人员外出",
    outing_overdue: "外出超时", low_confidence: "识别置信度低", command_outcome_uncertain: "闸门状态不明",
    device_misbehaving: "设备异常", device_clock: "设备时钟", fire_input_cleared: "消防输入恢复",
    fire_input_unknown: "消防输入不可读", clock_jump: "网关时钟跳变", command_not_sent: "指令未发出",
    order_topic_poisoned: "指令通道异常",
  };
  const MODE = { normal: "正常", epidemic: "防疫", lockdown: "封控", fire: "消防" };
  const FIRE_INPUT = { normal: "正常", fire: "火警", unknown: "不可读" };
  const LOUD = new Set(["fever", "fire_mode", "fire_input_unknown"]);

  let run = null;
  let heard = 0;
  let live = false;
  let ended = false;
  const alarms = new Map(); // seq → alarm
  const silenced = new Set(); // seqs the guard has silenced (still open)

  function time(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString("zh-CN", { hour12: false });
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // --- live or not --------------------------------------------------------------------------
  function banner(text) {
    const b = $("#banner");
    b.hidden = !text;
    b.textContent = text || "";
  }
  function setLive(ok, why) {
    live = ok;
    document.body.classList.toggle("stale", !ok);
    const l = $("#live");
    l.textContent = ok ? "实时" : "非实时";
    l.className = "badge " + (ok ? "good" : "bad");
    if (!ok) banner(why);
    else if (!ended) banner("");
  }
  setInterval(() => {
    if (live && Date.now() - heard > 6000) {
      setLive(false, "画面已停止更新（超过 6 秒未收到网关消息）：以下内容可能已过时。");
    }
  }, 1000);

  // --- the stream ---------------------------------------------------------------------------
  const es = new EventSource("/live");
  function restarted() {
    ended = true;
    banner("网关守护进程已重启。画面已按重启后的状态刷新；重启前的决定不再显示。");
  }
  function hear(d) {
    if (d && d.run) {
      if (run && d.run !== run) restarted();
      run = d.run;
    }
    heard = Date.now();
    if (!live) setLive(true);
  }
  es.addEventListener("hello", (e) => {
    const d = JSON.parse(e.data);
    hear(d);
    lanes.forEach((l, i) => {
      const body = $("tbody", l);
      body.textContent = "";
      lastSeq[i] = 0;
      (d.lanes[i] || []).slice().reverse().forEach((x) => addDecision(i, x));
    });
    alarms.clear();
    $("#alarm-list").textContent = "";
    d.alarms.slice().reverse().forEach(addAlarm);
    gate(d.gate);
    missed(d.missed);
    countAlarms();
  });
  es.addEventListener("batch", (e) => {
    const d = JSON.parse(e.data);
    hear(null);
    d.decisions.forEach((x) => addDecision(x.lane, x.d));
    d.alarms.forEach(addAlarm);
    d.closed.forEach((c) => closeAlarm(c.seq));
    if (d.gate) gate(d.gate);
    missed(d.missed);
    countAlarms();
  });
  // Records the console fell behind on (the gate decided them; the company has them), and open
  // alarms past the 500 it keeps.
  function missed(m) {
    const el = $("#missed");
    el.hidden = !(m && (m[0] || m[1] || m[2]));
    if (el.hidden) return;
    el.textContent = "控制台处理不及：" + m[0] + " 条通行、" + m[1] + " 条报警未显示；" +
      m[2] + " 条最早的未确认报警因超过 500 条已移出本页（记录均已上传公司）";
  }
  es.addEventListener("ping", (e) => hear(JSON.parse(e.data)));
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      setLive(false, "与网关的连接已断开，登录可能已失效（网关重启后需重新登录）。");
      const a = el("a", null, "重新登录");
      a.href = "/login";
      $("#banner").append(" ", a);
    } else {
      setLive(false, "与网关的连接中断，正在重连……以下内容不是实时的。");
    }
  };

  // --- lanes --------------------------------------------------------------------------------
  const lastSeq = [];
  function addDecision(lane, d) {
    const l = lanes[lane];
    if (!l || d.seq <= (lastSeq[lane] || 0)) return;
    lastSeq[lane] = d.seq;
    const body = $("tbody", l);
    const tr = el("tr", d.allow ? "allow" : "deny");
    tr.append(el("td", "t", time(d.at)));
    tr.append(el("td", null, (KIND[d.kind] || d.kind) + (d.subject ? " " + d.subject : "")));
    tr.append(el("td", d.fever ? "fever" : null, d.t == null ? "" : d.t.toFixed(1) + " °C"));
    let verdict = (d.allow ? "✓ " : "✗ ") + (REASON[d.reason] || d.reason);
    if (d.by) verdict += "（" + d.by + "：" + d.why + "）";
    if (d.not_actuated) verdict += "（未动作）";
    tr.append(el("td", null, verdict));
    body.prepend(tr);
    while (body.rows.length > 8) body.deleteRow(-1);
  }

  function gate(g) {
    const mode = $("#mode");
    mode.textContent = "模式：" + (MODE[g.mode] || g.mode);
    mode.className = "badge " + (g.mode === "normal" ? "good" : g.mode === "fire" ? "bad" : "warn");
    const clock = $("#clock");
    clock.textContent = g.clock_synced ? "时钟已同步" : "时钟未同步：访客通行证暂停";
    clock.className = "badge " + (g.clock_synced ? "good" : "bad");
    const up = $("#uplink");
    up.textContent = g.uplink ? "已连公司" : "未连公司（记录暂存 " + g.outbox + " 条）";
    if (!g.store_durable) up.textContent += " · 存储故障：记录暂存内存";
    up.className = "badge " + (g.uplink && g.store_durable ? "good" : g.store_durable ? "warn" : "bad");
    $("#fire").hidden = g.mode !== "fire";
    const fire = g.devices.filter((d) => d.fire_input);
    $("#fire-inputs").textContent = fire.length
      ? "消防报警输入：" + fire.map((d) => d.id + " " + (FIRE_INPUT[d.fire_input] || d.fire_input)).join("，")
      : "没有接入消防报警输入。";
    g.devices.forEach((d) => {
      document.querySelectorAll('li[data-device="' + CSS.escape(d.id) + '"]').forEach((li) => {
        li.classList.toggle("off", !d.online);
        const parts = [d.online ? "在线" : "离线"];
        if (d.last_seen_ms) parts.push("最后 " + time(d.last_seen_ms));
        if (d.arm) parts.push("闸杆 " + ({ up: "抬起", down: "落下", moving: "运动中", unknown: "未知" }[d.arm] || d.arm));
        if (d.safety_loop) parts.push("安全地感有车");
        if (d.arming_loop) parts.push("检测地感有车");
        if (d.fault) parts.push("故障码 " + d.fault);
        if (d.uncertain) parts.push(d.uncertain + " 次指令未确认");
        if (d.fire_input) parts.push("消防输入 " + (FIRE_INPUT[d.fire_input] || d.fire_input));
        $(".state", li).textContent = parts.join(" · ");
      });
    });
  }

  // --- alarms -------------------------------------------------------------------------------
  function addAlarm(a) {
    if (alarms.has(a.seq)) return;
    alarms.set(a.seq, a);
    const li = el("li", LOUD.has(a.kind) ? "loud" : null);
    li.dataset.seq = a.seq;
    li.append(el("span", "t", time(a.at)), " ");
    li.append(el("strong", null, ALARM[a.kind] || a.kind), " ");
    const where = [a.lane, a.device, a.subject, a.t == null ? "" : a.t.toFixed(1) + " °C"].filter((x) => x);
    li.append(el("span", null, where.join(" · ")), " ");
    li.append(el("span", "muted", a.detail), " ");
    const f = el("form", "inline");
    f.method = "post";
    f.action = "/ack";
    for (const [k, v] of [["csrf", csrf], ["seq", a.seq]]) {
      const i = el("input");
      i.type = "hidden";
      i.name = k;
      i.value = v;
      f.append(i);
    }
    f.append(el("button", null, "确认"));
    li.append(f);
    $("#alarm-list").prepend(li);
  }
  function closeAlarm(seq) {
    alarms.delete(seq);
    silenced.delete(seq);
    const li = document.querySelector('#alarm-list li[data-seq="' + CSS.escape(seq) + '"]');
    if (li) li.remove();
  }
  function countAlarms() {
    $("#alarm-count").textContent = String(alarms.size);
    $("#alarms").classList.toggle("none", alarms.size === 0);
    sound();
  }

  // --- sound: fever and fire until silenced (silencing is not acknowledging) ----------------
  let ctx = null;
  let beeping = null;
  function loud() {
    for (const [seq, a] of alarms) if (LOUD.has(a.kind) && !silenced.has(seq)) return true;
    return false;
  }
  function beep() {
    if (!ctx || ctx.state !== "running") return;
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.frequency.value = 880;
    g.gain.value = 0.2;
    o.connect(g).connect(ctx.destination);
    o.start();
    o.stop(ctx.currentTime + 0.35);
  }
  function sound() {
    const on = loud();
    $("#silence").hidden = !on;
    if (on && !ctx && window.AudioContext) ctx = new AudioContext();
    // Browsers start sound only after a click on the page: the button says so.
    $("#sound").hidden = !(on && ctx && ctx.state !== "running");
    if (on && !beeping) beeping = setInterval(beep, 1000);
    if (!on && beeping) {
      clearInterval(beeping);
      beeping = null;
    }
    document.body.classList.toggle("alerting", on);
  }
  $("#sound").addEventListener("click", () => ctx && ctx.resume().then(sound));
  document.addEventListener("click", () => ctx && ctx.state === "suspended" && ctx.resume().then(sound));
  $("#silence").addEventListener("click", () => {
    for (const [seq, a] of alarms) if (LOUD.has(a.kind)) silenced.add(seq);
    sound();
  });
})();
