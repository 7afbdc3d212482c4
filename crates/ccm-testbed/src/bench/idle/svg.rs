//! The chart of `ccm bench idle --svg`: per trace, one bar per policy for the idle hours it
//! stopped (top panel, with the stoppable hours as a dashed line) and one for its wrongful
//! pauses (bottom panel). Hand-drawn SVG, no dependency.

use super::IdleReport;

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG document charting `reports` (one group of bars per trace).
pub fn chart(reports: &[IdleReport]) -> String {
    let mut policies: Vec<String> = Vec::new();
    for r in reports {
        for p in &r.policies {
            if !policies.contains(&p.policy) {
                policies.push(p.policy.clone());
            }
        }
    }
    let bar = 16.0;
    let gap = 28.0;
    let group_w = bar * policies.len().max(1) as f64 + gap;
    let left = 70.0;
    let width = left + group_w * reports.len().max(1) as f64 + 170.0;
    let (top_h, bottom_h) = (260.0, 140.0);
    let top_y = 40.0;
    let bottom_y = top_y + top_h + 60.0;
    let height = bottom_y + bottom_h + 60.0;
    let max_hours = reports
        .iter()
        .flat_map(|r| {
            r.policies
                .iter()
                .map(|p| p.idle_hours_stopped.max(p.stoppable_hours))
        })
        .fold(1.0_f64, f64::max);
    let max_wrong = reports
        .iter()
        .flat_map(|r| r.policies.iter().map(|p| p.wrongful_pauses as f64))
        .fold(1.0_f64, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">Idle instance-hours stopped \
         (dashed: stoppable) and wrongful pauses, per policy and trace</text>\n"
    );
    let panel = |s: &mut String, y0: f64, h: f64, max: f64, label: &str| {
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2:.0}\" y2=\"{y}\" stroke=\"#333\"/>\n\
             <line x1=\"{left}\" y1=\"{y0}\" x2=\"{left}\" y2=\"{y}\" stroke=\"#333\"/>\n\
             <text x=\"12\" y=\"{ym:.0}\" transform=\"rotate(-90 12 {ym:.0})\" text-anchor=\"middle\">{label}</text>\n",
            y = y0 + h,
            x2 = width - 160.0,
            ym = y0 + h / 2.0
        ));
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            let y = y0 + h - h * f64::from(k) / 4.0;
            s.push_str(&format!(
                "<text x=\"{x:.0}\" y=\"{ty:.0}\" text-anchor=\"end\">{v:.0}</text>\n\
                 <line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{x2:.0}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n",
                x = left - 6.0,
                ty = y + 4.0,
                x2 = width - 160.0
            ));
        }
    };
    panel(&mut s, top_y, top_h, max_hours, "idle hours stopped");
    panel(&mut s, bottom_y, bottom_h, max_wrong, "wrongful pauses");
    for (g, r) in reports.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_w * g as f64;
        s.push_str(&format!(
            "<text x=\"{x:.0}\" y=\"{y:.0}\" text-anchor=\"middle\">{name}</text>\n",
            x = x0 + (group_w - gap) / 2.0,
            y = bottom_y + bottom_h + 18.0,
            name = esc(&r.trace)
        ));
        let stoppable = r.policies.first().map_or(0.0, |p| p.stoppable_hours);
        let sy = top_y + top_h - top_h * stoppable / max_hours;
        s.push_str(&format!(
            "<line x1=\"{x0:.1}\" y1=\"{sy:.1}\" x2=\"{x1:.1}\" y2=\"{sy:.1}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\n",
            x1 = x0 + group_w - gap
        ));
        for p in &r.policies {
            let i = policies.iter().position(|n| n == &p.policy).unwrap_or(0);
            let colour = COLOURS[i % COLOURS.len()];
            let x = x0 + bar * i as f64;
            let h1 = top_h * p.idle_hours_stopped / max_hours;
            let h2 = bottom_h * p.wrongful_pauses as f64 / max_wrong;
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h1:.1}\" fill=\"{colour}\">\
                 <title>{t}: {p_name} stopped {v:.1} idle h ({pc:.1}% of stoppable)</title></rect>\n\
                 <rect x=\"{x:.1}\" y=\"{y2:.1}\" width=\"{w:.1}\" height=\"{h2:.1}\" fill=\"{colour}\">\
                 <title>{t}: {p_name} {n} wrongful pauses</title></rect>\n\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" font-size=\"9\">{n}</text>\n",
                y = top_y + top_h - h1,
                w = bar - 2.0,
                y2 = bottom_y + bottom_h - h2,
                tx = x + (bar - 2.0) / 2.0,
                ty = bottom_y + bottom_h - h2 - 3.0,
                t = esc(&r.trace),
                p_name = esc(&p.policy),
                v = p.idle_hours_stopped,
                pc = p.percent_stopped,
                n = p.wrongful_pauses
            ));
        }
    }
    for (i, name) in policies.iter().enumerate() {
        let y = top_y + 10.0 + 18.0 * i as f64;
        s.push_str(&format!(
            "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"12\" height=\"12\" fill=\"{c}\"/>\
             <text x=\"{tx:.0}\" y=\"{ty:.0}\">{n}</text>\n",
            x = width - 150.0,
            c = COLOURS[i % COLOURS.len()],
            tx = width - 132.0,
            ty = y + 10.0,
            n = esc(name)
        ));
    }
    s.push_str("</svg>\n");
    s
}
