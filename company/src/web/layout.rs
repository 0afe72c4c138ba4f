//! The frame of every page: one small inline stylesheet (phone first: the community worker reads
//! between rounds), the person's links and the logout form.
use super::who::{Role, Who};
use super::App;
use axum::response::Html;
use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = "
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,'PingFang SC','Noto Sans CJK SC','Microsoft YaHei',sans-serif;color:#1b1f24;background:#f5f6f8}
header{display:flex;flex-wrap:wrap;gap:.6em;align-items:center;padding:.5em .8em;background:#17324d;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}header nav{display:flex;gap:.9em;flex-wrap:wrap;flex:1}
header form{margin:0}header button{background:none;border:1px solid #fff8;color:#fff;border-radius:4px;padding:.15em .6em}
main{padding:.8em;max-width:1200px;margin:auto}h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
.sub{color:#5a6470;margin:.2em 0 .8em}table{border-collapse:collapse;width:100%;background:#fff;font-size:.93em}
th,td{border:1px solid #d8dde3;padding:.3em .45em;text-align:left;vertical-align:top}th{background:#eef1f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}.wrap{overflow-x:auto}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34}.warn{color:#9a6700;font-weight:600}
.tiles{display:flex;flex-wrap:wrap;gap:.5em}.tiles a{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.5em .8em;text-decoration:none;color:#17324d}
form.q{display:flex;flex-wrap:wrap;gap:.4em;align-items:end;margin:.5em 0}form.q input,form.q button,.btn{padding:.3em .5em;font:inherit}
.btn{display:inline-block;background:#17324d;color:#fff;border-radius:4px;text-decoration:none;border:0}
form.login{max-width:22em;margin:12vh auto;background:#fff;padding:1.5em;border-radius:8px;border:1px solid #d8dde3}
form.login label{display:block;margin:.6em 0}form.login input{display:block;width:100%;padding:.45em;font:inherit}
form.login button{width:100%;padding:.55em;font:inherit;background:#17324d;color:#fff;border:0;border-radius:4px;margin-top:.6em}
.error{color:#b3261e}svg{max-width:100%;height:auto;background:#fff;border:1px solid #d8dde3}
.notes{color:#5a6470;font-size:.9em}
";

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) }
        style { (PreEscaped(STYLE)) }
    }
}

/// A page without the person's frame (the login page).
pub fn bare(_app: &App, title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            html lang="zh-CN" {
                (head(title))
                body { main { (body) } }
            }
        }
        .into_string(),
    )
}

/// A signed-in person's page.
pub fn page(app: &App, who: &Who, title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            html lang="zh-CN" {
                (head(title))
                body {
                    header {
                        nav {
                            a href=(who.home()) { (app.t("app")) }
                            @if who.role == Role::Company {
                                a href="/fleet" { (app.t("fleet")) }
                                a href="/fleet/alarms" { (app.t("alarms")) }
                                a href="/fleet/orders" { (app.t("orders")) }
                            }
                        }
                        span { (who.name) }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { (app.t("logout")) }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}
