//! Bar charts as inline SVG, drawn on the server: no script, no library, a few hundred bytes.
use maud::{html, Markup};

/// Bars of `values` (label, value), titled; labels thinned to fit.
pub fn bars(title: &str, values: &[(String, i64)], color: &str) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 36.0;
    const BOTTOM: f64 = 22.0;
    const TOP: f64 = 24.0;
    let max = values.iter().map(|v| v.1).max().unwrap_or(0).max(1);
    let n = values.len().max(1) as f64;
    let slot = (W - LEFT - 4.0) / n;
    let plot = H - BOTTOM - TOP;
    // At most about 12 labels under the axis.
    let every = (values.len() / 12).max(1);
    html! {
        svg viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label=(title) {
            text x="4" y="16" font-size="13" font-weight="600" { (title) }
            text x=(LEFT - 4.0) y=(TOP + 10.0) font-size="10" text-anchor="end" { (max) }
            text x=(LEFT - 4.0) y=(H - BOTTOM) font-size="10" text-anchor="end" { "0" }
            line x1=(LEFT) y1=(H - BOTTOM) x2=(W - 2.0) y2=(H - BOTTOM) stroke="#8894a0" {}
            @for (i, (label, v)) in values.iter().enumerate() {
                @let h = plot * (*v as f64) / (max as f64);
                @let x = LEFT + slot * i as f64;
                rect x=(format!("{:.1}", x + slot * 0.15)) y=(format!("{:.1}", H - BOTTOM - h))
                    width=(format!("{:.1}", slot * 0.7)) height=(format!("{:.1}", h)) fill=(color) {
                    title { (label) ": " (v) }
                }
                @if i % every == 0 {
                    text x=(format!("{:.1}", x + slot / 2.0)) y=(H - 6.0) font-size="10" text-anchor="middle" { (label) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_label_from_a_device_is_text_not_markup() {
        let svg = super::bars("t", &[("<script>x</script>".into(), 3)], "#000").into_string();
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }
}
