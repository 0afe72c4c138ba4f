//! The console's two pages. The frame is rendered here (escaped by maud); what changes —
//! decisions, alarms, device states, the mode — is filled in by `console.js` from the live
//! stream, as text (never as markup).
use super::auth::Session;
use super::users::Role;
use super::Console;
use maud::{html, Markup, DOCTYPE};

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

pub fn console(c: &Console, s: &Session) -> Markup {
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
                        form.open method="post" action="/open" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            input type="hidden" name="lane" value=(lane.id);
                            input name="reason" required maxlength="100" placeholder="开闸原因";
                            button type="submit" { "开闸" }
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
