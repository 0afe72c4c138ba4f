//! The console's two pages. The frame is rendered here (escaped by maud); what changes —
//! decisions, alarms, device states, the mode — is filled in by `console.js` from the live
//! stream, as text (never as markup).
use super::auth::Session;
use super::users::Role;
use super::visitors::{MAX_ENTRIES, MAX_HOURS};
use super::Console;
use crate::store::local_passes::LocalPass;
use maud::{html, Markup, PreEscaped, DOCTYPE};

pub const STYLESHEET: &str = include_str!("console.css");
pub const SCRIPT: &str = include_str!("console.js");

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/static/console.css";
            }
            body { (body) }
        }
    }
}

pub fn login(gateway: &str, csrf: &str, said: Option<&str>) -> Markup {
    frame(
        "岗亭控制台 登录",
        html! {
            main.login {
                h1 { "岗亭控制台" }
                p.muted { "网关 " (gateway) }
                @if let Some(s) = said { p.said role="alert" { (s) } }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "用户名" input name="user" autocomplete="username" required autofocus; }
                    label { "密码" input name="password" type="password" autocomplete="current-password" required; }
                    button type="submit" { "登录" }
                }
            }
        },
    )
}

pub fn console(c: &Console, s: &Session, passes: &[LocalPass]) -> Markup {
    let lanes = &c.view.lanes;
    frame(
        "岗亭控制台",
        html! {
            meta name="csrf" content=(s.csrf);
            header #top {
                span.gw { (c.gateway) }
                span #mode.badge { "…" }
                span #clock.badge { "…" }
                span #uplink.badge { "…" }
                span #live.badge.bad { "连接中…" }
                button #sound type="button" hidden { "启用声音" }
                button #silence type="button" hidden { "静音" }
                span.who { (s.user) " · " (role_label(s.role)) }
                form.inline method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button type="submit" { "退出" }
                }
            }
            div #banner role="alert" hidden {}
            p #missed.said hidden {}
            @if let Some(f) = &s.flash { p.said role="status" { (f) } }
            noscript { p.said { "实时画面需要浏览器启用 JavaScript。" } }
            section #fire hidden {
                h2 { "消防模式：所有闸门常开" }
                p #fire-inputs {}
                p { "结束消防模式须在网关本机执行 " code { "gatehouse fire-reset" }
                    "（消防报警输入恢复正常后才会接受）。控制台不能结束消防模式。" }
            }
            section #alarms {
                h2 { "未确认报警 " span #alarm-count { "0" } }
                ul #alarm-list {}
            }
            section #lanes {
                @for (i, lane) in lanes.iter().enumerate() {
                    article.lane id=(format!("lane-{i}")) data-lane=(lane.id) {
                        h2 { (lane.id) " " span.muted { (direction_label(lane.direction)) } }
                        ul.devices {
                            @for (id, role, _) in &lane.devices {
                                li data-device=(id) { span.dot {} " " (id) " " span.muted { (role_name(role)) } " " span.state {} }
                            }
                        }
                        table.decisions { tbody {} }
                        @if lane.has_gate {
                            form.open method="post" action="/open" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="lane" value=(lane.id);
                                input name="reason" required maxlength="100" placeholder="开闸原因";
                                button type="submit" { "开闸" }
                            }
                        }
                    }
                }
            }
            section #visitors {
                h2 { "登记访客" }
                form.visitor method="post" action="/visitor" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label { "被访住户" input name="host" required maxlength="32" placeholder="住户编号，如 H012"; }
                    label { "事由" input name="purpose" required maxlength="40" placeholder="探亲、送货、维修…"; }
                    label { "访客姓名（仅存本机）" input name="name" maxlength="20"; }
                    label { "进入次数" input name="entries" type="number" min="1" max=(MAX_ENTRIES) value="1" required; }
                    label { "有效时长"
                        select name="hours" {
                            option value="2" { "2 小时" }
                            option value="4" selected { "4 小时" }
                            option value="8" { "8 小时" }
                            option value="24" { "24 小时" }
                            option value=(MAX_HOURS) { (MAX_HOURS) " 小时" }
                        }
                    }
                    label { "车牌（开车来访）" input name="plate" maxlength="10"; }
                    label { "凭证"
                        select name="medium" {
                            option value="qr" { "二维码（终端扫码）" }
                            option value="card" { "访客卡（填卡号）" }
                        }
                    }
                    label { "卡号" input name="card" maxlength="20" inputmode="numeric"; }
                    button type="submit" { "登记并发放通行证" }
                }
                @if !passes.is_empty() {
                    table.passes {
                        thead { tr { th { "通行证" } th { "住户" } th { "事由" } th { "次数" } th { "有效至" } th {} } }
                        tbody {
                            @for p in passes {
                                tr {
                                    td { a href=(format!("/pass?id={}", p.id)) { (p.id) } }
                                    td { (p.host_household) }
                                    td { (p.purpose) }
                                    td { (p.uses) }
                                    td { time data-ms=(p.valid_until_ms) { (p.valid_until_ms) } }
                                    td {
                                        form.inline method="post" action="/withdraw" {
                                            input type="hidden" name="csrf" value=(s.csrf);
                                            input type="hidden" name="id" value=(p.id);
                                            button type="submit" { "撤销" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if s.role == Role::Supervisor {
                section #supervisor {
                    form.inline method="post" action="/mode" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        label { "模式 "
                            select name="mode" {
                                option value="normal" { "正常" }
                                option value="epidemic" { "防疫（必须测温）" }
                                option value="lockdown" { "封控" }
                                option value="fire" { "消防" }
                            }
                        }
                        button type="submit" { "更改模式" }
                    }
                }
            }
            script src="/static/console.js" {}
        },
    )
}

/// One pass, to show the visitor (the QR code for the terminal's reader) or to hand over the
/// card's number.
pub fn pass(p: &LocalPass, s: &Session) -> Markup {
    // Digits (and a card's ':'), checked where the pass was made: nothing to escape.
    let qr = (p.medium == "qr")
        .then(|| qrcode::QrCode::new(p.code.as_bytes()).ok())
        .flatten()
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(260, 260)
                .build()
        });
    frame(
        "访客通行证",
        html! {
            main.pass {
                p { a href="/" { "← 返回控制台" } " · " (s.user) }
                h1 { "访客通行证 " (p.id) }
                @if let Some(svg) = qr {
                    div.qr { (PreEscaped(svg)) }
                    p.muted { "请访客在闸机终端上扫描此二维码（或用手机拍下后出示）。" }
                } @else {
                    p.muted { "请把这张访客卡交给访客：" }
                }
                p.code { (p.code) }
                table {
                    tr { th { "被访住户" } td { (p.host_household) } }
                    tr { th { "事由" } td { (p.purpose) } }
                    @if !p.visitor_name.is_empty() { tr { th { "访客" } td { (p.visitor_name) } } }
                    @if let Some(plate) = &p.plate { tr { th { "车牌" } td { (plate) } } }
                    tr { th { "进入次数" } td { (p.uses) } }
                    tr { th { "有效至" } td { time data-ms=(p.valid_until_ms) { (p.valid_until_ms) } } }
                }
            }
            script src="/static/console.js" {}
        },
    )
}

fn role_label(r: Role) -> &'static str {
    match r {
        Role::Guard => "保安",
        Role::Supervisor => "主管",
    }
}

fn direction_label(d: &str) -> &'static str {
    match d {
        "in" => "入口",
        "out" => "出口",
        _ => "双向",
    }
}

fn role_name(r: &str) -> &'static str {
    match r {
        "thermal" => "测温",
        "identifier" => "识别",
        "turnstile" => "闸机",
        "plate_camera" => "车牌相机",
        "barrier" => "道闸",
        "loop" => "地感",
        "fire_input" => "消防输入",
        _ => "设备",
    }
}
