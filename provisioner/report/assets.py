"""What every report page carries: escaping, the legend, the style sheet (screen and A4
print), the one inline script (filtering by entity or severity) and the Content-Security-Policy
that allows that script alone and fetches nothing."""

from __future__ import annotations

import base64
import hashlib
from html import escape


def esc(value: object) -> str:
    """Every value on the page, text and attributes alike."""
    return escape(str(value), quote=True)


LEGEND = (
    '<svg class="legend" viewBox="0 0 1000 24" role="img" aria-label="legend">'
    '<g class="gen current"><rect class="bar" x="0" y="5" width="40" height="14"/></g>'
    '<text x="46" y="16">current</text>'
    '<g class="gen retained"><rect class="bar" x="110" y="5" width="40" height="14"/></g>'
    '<text x="156" y="16">retained</text>'
    '<g class="gen retired"><rect class="bar" x="230" y="5" width="40" height="14"/></g>'
    '<text x="276" y="16">retired</text>'
    '<rect class="renew" x="340" y="5" width="40" height="14"/>'
    '<text x="386" y="16">renewal window</text>'
    '<path class="deadline" d="M510 6l6 6-6 6-6-6z"/>'
    '<text x="522" y="16">date limite de remise des plis</text>'
    '<circle class="opening" cx="722" cy="12" r="5"/><text x="733" y="16">ouverture des plis</text>'
    '<path class="deadline risk" d="M865 6l6 6-6 6-6-6z"/><text x="877" y="16">at risk</text>'
    '<g class="today"><line x1="950" x2="950" y1="2" y2="22"/></g>'
    '<text x="956" y="16">today</text></svg>'
    '<p class="legend">Badges: <span class="sev crit">CRITICAL</span> bids of a consultation '
    'not closed are at risk now; <span class="sev warn">WARNING</span> what can wait or what '
    'the next apply repairs; <span class="sev ok">OK</span> nothing to do. Orange bars are '
    "retained bi-clés (kept for an open consultation), orange labels consultations with a "
    'warning, red ones consultations at risk; <span class="expires-first">|◂ n d</span> marks '
    "a bound bi-clé that expires n days before the consultation's date.</p>"
)

CSS = """
:root{--cur:#2a6fb0;--ret:#d08b16;--old:#9aa0a6;--crit:#c62828;--warn:#b26a00;--ok:#2e7d32;
--line:#d5d9de;color-scheme:light}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0 auto;max-width:1100px;padding:0 16px 40px;color:#1c1f23;background:#fff}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:17px;margin:0 0 4px}
h3{font-size:14px;margin:8px 0 2px}
a{color:#1a5593}code{font:12px ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;margin:6px 0;width:100%;font-size:12.5px}
th,td{border-bottom:1px solid var(--line);padding:2px 6px;text-align:left;vertical-align:top}
thead th{background:#f3f5f7;font-weight:600}
.sev{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;font-weight:700;color:#fff}
.sev.ok{background:var(--ok)}.sev.warn{background:var(--warn)}.sev.crit{background:var(--crit)}
.summary{font-weight:600}.meta{color:#555;margin:0}
section.entity{border-top:2px solid var(--line);padding:10px 0 6px;content-visibility:auto;
contain-intrinsic-size:auto 520px}
section.entity:target{outline:3px solid #7aa7d8;outline-offset:4px}
.ready.yes{color:var(--ok);margin:0}.ready.no{color:var(--warn);margin:0}
.name{font-weight:400;color:#444}.absent{font-size:12px;color:#777}.former{color:#777}
svg.timeline{width:100%;height:auto;display:block;margin:6px 0}
svg.defs{position:absolute;width:0;height:0;overflow:hidden}
svg{font:12px system-ui,"DejaVu Sans",sans-serif}svg.legend{width:100%;height:auto;max-height:28px}
svg text{fill:#1c1f23}svg text.end{text-anchor:end}text.tick{font-size:10px;fill:#666}
svg text.none{text-anchor:middle;fill:#777}
path.tick{stroke:#eceff2;fill:none}path.tick.year{stroke:#c9ced4}
.gen .bar{fill:var(--cur);fill-opacity:.28;stroke:var(--cur)}
.gen.retained .bar{fill:var(--ret);stroke:var(--ret)}
.gen.retired .bar{fill:var(--old);stroke:var(--old)}
.renew{fill:rgba(0,0,0,.16);stroke:none}
.today line{stroke:#6a1b9a;stroke-width:2;stroke-dasharray:4 3}
.cons line.span{stroke:#555;stroke-width:1.5}
.cons line.link{stroke:#555;stroke-dasharray:2 2}
.cons line.link.risk{stroke:var(--crit);stroke-width:1.5}
.deadline{fill:#fff;stroke:#333;stroke-width:1.5}.opening{fill:#333}
.deadline.risk{fill:var(--crit);stroke:var(--crit)}.opening.risk{fill:var(--crit);stroke:var(--crit)}
.cons.risk text{fill:var(--crit);font-weight:700}.cons.warn text{fill:var(--warn)}
.cons.closed{opacity:.55}
td.copy{text-align:center;font-weight:600}table.copies thead th[data-generation]{text-align:center}
#answer{border:2px solid var(--line);border-radius:4px;padding:8px 12px;margin:10px 0}
#answer.crit{border-color:var(--crit)}#answer.warn{border-color:var(--warn)}
#answer.ok{border-color:var(--ok)}#answer h2{font-size:18px;margin:0 0 6px}
ol.risks,ul.risks{margin:4px 0 6px;padding-left:22px}ol.risks li{margin:3px 0;font-weight:600}
ol.risks li.crit{color:#8e1b1b}p.probe{font-size:11.5px;margin-top:6px}
p.legend{font-size:12px;color:#444;margin:2px 0 8px}
.expires-first,text.expires-first{color:var(--crit);fill:var(--crit);font-weight:700}
line.expires-first{stroke:var(--crit);stroke-width:2}
td.copy.present{color:var(--ok)}td.copy.missing,td.copy.conflict{color:#fff;background:var(--crit)}
td.copy.drifted{color:#000;background:#ffe08a}
td.copy.remove{color:#777;text-decoration:line-through}
td.copy.none{color:#bbb}td.copy.planned{color:#1a5593}td.risk{color:var(--crit);font-weight:700}
tr.store.installed td{color:var(--ok)}
tr.store:not(.installed):not(.unreachable) td{color:var(--crit);font-weight:600}
tr.crit td:first-child{border-left:3px solid var(--crit)}
tr.warn td:first-child{border-left:3px solid var(--warn)}
ul.findings{margin:6px 0;padding-left:18px}ul.plan{margin:6px 0;padding-left:0;list-style:none}
li.crit{color:var(--crit)}li.warn{color:#6b4200}
code.sym{font-weight:700;display:inline-block;min-width:2.2em;text-align:right}
.add .sym,code.sym.add{color:#1b7f2a}.change .sym,code.sym.change{color:#a06800}
.destroy .sym,code.sym.destroy{color:var(--crit)}.replace .sym,code.sym.replace{color:#8e24aa}
.conflict .sym,code.sym.conflict{color:#a06800}
dl.attrs{display:grid;grid-template-columns:max-content auto;gap:0 8px;margin:2px 0 4px 3em;
font-size:12px}
dl.attrs dt{color:#555}dl.attrs dd{margin:0}
.stale{padding:4px 8px;border:1px solid var(--crit);color:var(--crit)}
table.audit{font-size:11.5px;color:#444}
p.top{text-align:right;margin:0;font-size:12px}
p.filter input{font:inherit;padding:2px 6px;width:22em}
@media print{
@page{size:A4;margin:12mm 10mm}
body{max-width:none;padding:0;font-size:10.5pt}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
p.filter,p.top{display:none}
section.entity{content-visibility:visible;break-inside:avoid-page;page-break-inside:avoid}
#answer{break-inside:avoid}
section.entity[hidden]{display:none}
h2,h3{break-after:avoid}svg,table,tr{break-inside:avoid}
a{color:inherit;text-decoration:none}
}
"""

SCRIPT = """(function(){
var f=document.getElementById("filter"),l=document.getElementById("level"),
o=document.getElementById("shown"),
s=document.querySelectorAll("section.entity,#index tbody tr");
function apply(){var q=f.value.trim().toLowerCase(),m=+l.value,n=0,i,e,h;
for(i=0;i<s.length;i++){e=s[i];
h=(q&&e.getAttribute("data-key").indexOf(q)<0)||+e.getAttribute("data-sev")<m;
e.hidden=!!h;if(!h&&e.tagName==="SECTION")n++;}
o.textContent=(q||m)?n+" shown":"";}
f.addEventListener("input",apply);l.addEventListener("change",apply);
var m=/^#filter=(.*)$/.exec(location.hash);if(m){f.value=decodeURIComponent(m[1]);apply();}
document.documentElement.setAttribute("data-ready","1");
})();"""


def csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
