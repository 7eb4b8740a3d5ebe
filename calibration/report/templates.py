"""Inline CSS for report.html (no external fonts or links: the page must open offline)."""

CSS = """
:root { --migrate: #1a7f37; --more: #b35900; --reject: #c62828; --muted: #666; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1f2328; background: #fff; line-height: 1.45; }
header { padding: 1.2rem 2rem 0.6rem; border-bottom: 1px solid #d0d7de; background: #f6f8fa; }
h1 { margin: 0 0 0.4rem; font-size: 1.6rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 1.8rem; }
h3 { font-size: 1.05rem; margin-bottom: 0.4rem; }
dl#run-facts { display: flex; flex-wrap: wrap; gap: 0.2rem 1.4rem; margin: 0; }
dl#run-facts dt { font-weight: 600; } dl#run-facts dt::after { content: ":"; }
dl#run-facts dd { margin: 0 0 0 -1.1rem; }
nav#toc { padding: 0.5rem 2rem; display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; font-size: 0.9rem;
          border-bottom: 1px solid #d0d7de; }
nav#toc a { color: #0550ae; text-decoration: none; }
main { padding: 0 2rem 2rem; max-width: 1200px; }
ul#verdicts { list-style: none; padding: 0; }
li.verdict { margin: 0.4rem 0; padding: 0.5rem 0.7rem; border-left: 6px solid var(--muted); background: #f6f8fa; }
li.verdict-migrate { border-color: var(--migrate); }
li.verdict-more-labels { border-color: var(--more); }
li.verdict-reject { border-color: var(--reject); }
.badge { display: inline-block; font-weight: 700; font-size: 0.8rem; padding: 0.1rem 0.45rem; border-radius: 3px;
         color: #fff; background: var(--muted); }
.verdict-migrate .badge { background: var(--migrate); }
.verdict-more-labels .badge { background: var(--more); }
.verdict-reject .badge { background: var(--reject); }
ul.reasons { margin: 0.3rem 0 0; font-size: 0.9rem; color: #444; }
table.data { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
table.data th, table.data td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: left;
                               vertical-align: top; }
table.data th { background: #f6f8fa; }
table.data tr.total td { font-weight: 700; }
table.data tr.unconverged td { background: #fdecea; }
table.data tr.alert-night td { background: #fdecea; }
td.alert { color: var(--reject); font-weight: 700; }
td.v-migrate { color: var(--migrate); font-weight: 700; }
td.v-more-labels { color: var(--more); font-weight: 700; }
td.v-reject { color: var(--reject); font-weight: 700; }
td.bad { color: var(--reject); font-weight: 700; }
p.not-measured { color: var(--muted); font-style: italic; }
p.warning { color: var(--reject); }
figure.plot { margin: 0.5rem 0 1rem; }
figure.plot .svg-wrap svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #444; }
"""
