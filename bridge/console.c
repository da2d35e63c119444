/* The cutover console of the admin listener: a static page, its style and
 * script (written below as C strings, served as they are: nothing to
 * build, nothing fetched from elsewhere), and the JSON it reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "bridge/admin.h"
#include "bridge/clock.h"
#include "bridge/console.h"
#include "bridge/cutover.h"
#include "bridge/json.h"
#include "bridge/log.h"
#include "bridge/metrics.h"
#include "bridge/queue.h"
#include "bridge/shadow.h"

/* clang-format off */
static const char console_html[] =
	"<!doctype html>\n"
	"<html lang='en'>\n"
	"<head>\n"
	"<meta charset='utf-8'>\n"
	"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
	"<title>webhook-bridge: cutover console</title>\n"
	"<link rel='icon' href='/favicon.svg' type='image/svg+xml'>\n"
	"<link rel='stylesheet' href='/console.css'>\n"
	"<script src='/console.js' defer></script>\n"
	"</head>\n"
	"<body>\n"
	"<header>\n"
	"<h1>webhook-bridge cutover</h1>\n"
	"<span id='ready'>loading</span>\n"
	"<span class='small'>updated <span id='updated'>never</span></span>\n"
	"<span id='status'></span>\n"
	"<button type='button' id='kill-all' class='kill'>Kill switch: v1 everywhere</button>\n"
	"</header>\n"
	"<main>\n"
	"<section>\n"
	"<h2>Cutover <span class='small' id='store'></span></h2>\n"
	"<table>\n"
	"<thead><tr><th>route</th><th>ramp (v2 share)</th><th>primary</th><th>status</th><th>rollback window</th><th>last change</th><th>steer</th></tr></thead>\n"
	"<tbody id='cutover-rows'></tbody>\n"
	"</table>\n"
	"</section>\n"
	"<section>\n"
	"<h2>Posts per minute</h2>\n"
	"<div id='traffic'></div>\n"
	"</section>\n"
	"<div class='cols'>\n"
	"<section>\n"
	"<h2>Answers since the start</h2>\n"
	"<table>\n"
	"<thead><tr><th>route</th><th>mode</th><th>outcome</th><th>posts</th></tr></thead>\n"
	"<tbody id='request-rows'></tbody>\n"
	"</table>\n"
	"</section>\n"
	"<section>\n"
	"<h2>Queue</h2>\n"
	"<div id='queue'></div>\n"
	"<h2>Shadow comparison</h2>\n"
	"<div id='shadow'></div>\n"
	"</section>\n"
	"</div>\n"
	"<section>\n"
	"<h2>Last errors</h2>\n"
	"<ul id='errors'></ul>\n"
	"</section>\n"
	"</main>\n"
	"</body>\n"
	"</html>\n";

static const char console_css[] =
	"body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }\n"
	"header { display: flex; gap: 16px; align-items: center; padding: 10px 18px; background: #1d2330; color: #fff; }\n"
	"header h1 { font-size: 18px; margin: 0; }\n"
	"header .kill { margin-left: auto; }\n"
	"main { padding: 8px 18px; }\n"
	"section { background: #fff; border-radius: 6px; padding: 8px 14px; margin: 10px 0; }\n"
	"h2 { font-size: 15px; margin: 6px 0; }\n"
	"table { border-collapse: collapse; width: 100%; }\n"
	"th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e3e7ee; vertical-align: top; }\n"
	".cols { display: grid; grid-template-columns: 1fr 1fr; gap: 0 14px; }\n"
	".small { font-size: 12px; color: #5b6475; }\n"
	"header .small { color: #b8c0cf; }\n"
	".mono { font-family: ui-monospace, monospace; font-size: 12px; }\n"
	"button { font: inherit; padding: 3px 10px; margin-left: 4px; border: 1px solid #8a94a6; border-radius: 4px; background: #fff; cursor: pointer; }\n"
	"button.kill { background: #b3261e; color: #fff; border-color: #b3261e; }\n"
	".ramp-input { width: 4em; }\n"
	".ramp { font-weight: bold; }\n"
	".st-killed, .st-rolled_back, .bad { color: #b3261e; font-weight: bold; }\n"
	"#status.bad { color: #ffb4ab; }\n"
	"figure { margin: 4px 0 10px; }\n"
	"figcaption { font-size: 12px; }\n"
	"#traffic { display: grid; grid-template-columns: repeat(3, 1fr); gap: 0 18px; }\n"
	"#traffic .legend { grid-column: 1 / -1; }\n"
	"svg.chart { display: block; width: 100%; height: 64px; background: #fafbfd; border-bottom: 1px solid #c9d0dc; }\n"
	".line { fill: none; stroke-width: 1.6; }\n"
	".v1_ok { stroke: #2f6fb3; color: #2f6fb3; }\n"
	".v1_failed { stroke: #9a6a00; color: #9a6a00; }\n"
	".v2_ok { stroke: #1f8a4c; color: #1f8a4c; }\n"
	".v2_failed { stroke: #b3261e; color: #b3261e; }\n"
	".legend .key { margin-right: 14px; font-size: 12px; font-weight: bold; }\n"
	".tile { display: inline-block; min-width: 90px; margin: 4px 10px 4px 0; }\n"
	".big { font-size: 20px; font-weight: bold; }\n"
	"#errors { margin: 0; padding-left: 18px; }\n"
	".lvl-error b { color: #b3261e; }\n";

static const char console_js[] =
	"'use strict';\n"
	"// The cutover console: reads /cutover and /console/data of this admin\n"
	"// listener every few seconds; changes go to POST /cutover/... with the\n"
	"// token GET /cutover gives.  Text from the bridge is set as text, never\n"
	"// as markup.\n"
	"var token = '';\n"
	"var SERIES = [['v1_ok', 'v1 ok'], ['v1_failed', 'v1 failed'], ['v2_ok', 'v2 ok'],\n"
	"  ['v2_failed', 'v2 failed']];\n"
	"\n"
	"function el(tag, attrs, text) {\n"
	"  var e = document.createElement(tag);\n"
	"  Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });\n"
	"  if (text !== undefined && text !== null) e.textContent = String(text);\n"
	"  return e;\n"
	"}\n"
	"\n"
	"function clear(id) {\n"
	"  var e = document.getElementById(id);\n"
	"  while (e.firstChild) e.removeChild(e.firstChild);\n"
	"  return e;\n"
	"}\n"
	"\n"
	"function say(text, bad) {\n"
	"  var s = document.getElementById('status');\n"
	"  s.textContent = text;\n"
	"  s.className = bad ? 'bad' : '';\n"
	"}\n"
	"\n"
	"function getJSON(path) {\n"
	"  return fetch(path, { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {\n"
	"    if (!r.ok) throw new Error(path + ' answered ' + r.status);\n"
	"    return r.json();\n"
	"  });\n"
	"}\n"
	"\n"
	"function change(route, body, question) {\n"
	"  if (!window.confirm(question)) return Promise.resolve();\n"
	"  var path = route === null ? '/cutover/kill' : '/cutover/' + encodeURIComponent(route);\n"
	"  return fetch(path, {\n"
	"    method: 'POST', credentials: 'same-origin',\n"
	"    headers: { 'Content-Type': 'application/json', 'X-Bridge-Token': token },\n"
	"    body: JSON.stringify(body)\n"
	"  }).then(function (r) {\n"
	"    return r.json().then(function (d) {\n"
	"      if (!r.ok) throw new Error(d.message || ('answered ' + r.status));\n"
	"      say('changed: ' + (route === null ? 'every route' : route) + ' (' + d.changed + ')');\n"
	"      return refresh();\n"
	"    });\n"
	"  }).catch(function (e) { say(String(e.message || e), true); });\n"
	"}\n"
	"\n"
	"function pct(x) { return (100 * x).toFixed(1) + ' %'; }\n"
	"\n"
	"/* Rows are updated in place, never rebuilt: the ramp an operator is typing and\n"
	"   the buttons under the pointer survive the refresh every 3 s. */\n"
	"var cutoverRows = {};\n"
	"\n"
	"function cutoverRow(route) {\n"
	"  var tr = el('tr', { 'data-route': route });\n"
	"  var act = el('td');\n"
	"  var input = el('input', { type: 'number', min: '0', max: '100', step: '1',\n"
	"    'class': 'ramp-input', 'aria-label': 'ramp of ' + route });\n"
	"  input.addEventListener('input', function () { input.setAttribute('data-edited', '1'); });\n"
	"  var set = el('button', { type: 'button', 'class': 'set-ramp' }, 'Set ramp');\n"
	"  set.addEventListener('click', function () {\n"
	"    var n = parseInt(input.value, 10);\n"
	"    if (!(n >= 0 && n <= 100)) { say('a ramp is 0..100', true); return; }\n"
	"    input.removeAttribute('data-edited');\n"
	"    change(route, { ramp: n }, 'Set the ramp of ' + route + ' to ' + n + ' %?');\n"
	"  });\n"
	"  var kill = el('button', { type: 'button', 'class': 'kill' }, 'Kill');\n"
	"  kill.addEventListener('click', function () {\n"
	"    change(route, { kill: true }, 'Put v1 back as primary for every participation of ' +\n"
	"      route + '?');\n"
	"  });\n"
	"  act.appendChild(input);\n"
	"  act.appendChild(set);\n"
	"  act.appendChild(kill);\n"
	"  tr.appendChild(act);\n"
	"  return { tr: tr, act: act, input: input };\n"
	"}\n"
	"\n"
	"function cutoverCells(r) {\n"
	"  var cells = [el('td', {}, r.route),\n"
	"    el('td', { 'class': 'ramp', 'data-field': 'ramp' }, r.ramp + ' %'),\n"
	"    el('td', { 'data-field': 'primary' }, r.primary)];\n"
	"  var st = el('td', { 'data-field': 'status', 'class': 'st-' + r.status }, r.status);\n"
	"  if (r.rollback && r.rollback.last) {\n"
	"    var l = r.rollback.last;\n"
	"    st.appendChild(el('div', { 'class': 'small' }, 'rolled back from ' + l.ramp_before +\n"
	"      ' %: v2 ' + l.v2_failed + '/' + l.v2_posts + ' failed (' + pct(l.v2_failure_rate) +\n"
	"      '), v1 ' + l.v1_failed + '/' + l.v1_posts));\n"
	"  }\n"
	"  cells.push(st);\n"
	"  var w = r.window;\n"
	"  cells.push(el('td', { 'class': 'small' }, 'v2 ' + w.v2_failed + '/' + w.v2_posts +\n"
	"    ' failed, v1 ' + w.v1_failed + '/' + w.v1_posts + ' (' + r.rollback.window_s +\n"
	"    ' s; rolls back over ' + pct(r.rollback.max_failure_rate) + ')'));\n"
	"  cells.push(el('td', { 'class': 'small' }, r.by));\n"
	"  return cells;\n"
	"}\n"
	"\n"
	"function renderCutover(state) {\n"
	"  var body = document.getElementById('cutover-rows'), seen = {};\n"
	"  var store = document.getElementById('store'), where = state.store || '';\n"
	"  /* the file's name on the page, its whole path on hover */\n"
	"  store.textContent = where.replace(/^(sqlite:).*\\/([^\\/]+)$/, '$1 $2');\n"
	"  store.title = where;\n"
	"  var empty = document.getElementById('cutover-empty');\n"
	"  if (empty) body.removeChild(empty);\n"
	"  if (!state.routes.length) {\n"
	"    var tr = el('tr', { id: 'cutover-empty' });\n"
	"    tr.appendChild(el('td', { colspan: '7' }, 'no dual route: nothing to cut over'));\n"
	"    body.appendChild(tr);\n"
	"  }\n"
	"  state.routes.forEach(function (r) {\n"
	"    var row = cutoverRows[r.route];\n"
	"    seen[r.route] = true;\n"
	"    if (!row) {\n"
	"      row = cutoverRows[r.route] = cutoverRow(r.route);\n"
	"      body.appendChild(row.tr);\n"
	"    }\n"
	"    while (row.tr.firstChild !== row.act) row.tr.removeChild(row.tr.firstChild);\n"
	"    cutoverCells(r).forEach(function (td) { row.tr.insertBefore(td, row.act); });\n"
	"    if (!row.input.getAttribute('data-edited')) row.input.value = String(r.ramp);\n"
	"  });\n"
	"  Object.keys(cutoverRows).forEach(function (k) {\n"
	"    if (!seen[k]) {\n"
	"      body.removeChild(cutoverRows[k].tr);\n"
	"      delete cutoverRows[k];\n"
	"    }\n"
	"  });\n"
	"}\n"
	"\n"
	"function chart(minutes) {\n"
	"  var W = 600, H = 120, max = 1;\n"
	"  var ns = 'http://www.w3.org/2000/svg';\n"
	"  minutes.forEach(function (m) {\n"
	"    SERIES.forEach(function (s) { max = Math.max(max, m[s[0]]); });\n"
	"  });\n"
	"  var svg = document.createElementNS(ns, 'svg');\n"
	"  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);\n"
	"  svg.setAttribute('preserveAspectRatio', 'none');\n"
	"  svg.setAttribute('class', 'chart');\n"
	"  SERIES.forEach(function (s) {\n"
	"    var pts = minutes.map(function (m, i) {\n"
	"      var x = minutes.length > 1 ? i * W / (minutes.length - 1) : 0;\n"
	"      return x.toFixed(1) + ',' + (H - m[s[0]] * H / max).toFixed(1);\n"
	"    }).join(' ');\n"
	"    var line = document.createElementNS(ns, 'polyline');\n"
	"    line.setAttribute('points', pts);\n"
	"    line.setAttribute('class', 'line ' + s[0]);\n"
	"    line.setAttribute('vector-effect', 'non-scaling-stroke');\n"
	"    svg.appendChild(line);\n"
	"  });\n"
	"  var box = el('div', { 'class': 'chart-box' });\n"
	"  box.appendChild(svg);\n"
	"  box.appendChild(el('div', { 'class': 'small' }, 'last 60 minutes; peak ' + max +\n"
	"    ' a minute'));\n"
	"  return box;\n"
	"}\n"
	"\n"
	"function renderTraffic(d) {\n"
	"  var box = clear('traffic');\n"
	"  var legend = el('div', { 'class': 'legend' });\n"
	"  SERIES.forEach(function (s) { legend.appendChild(el('span', { 'class': 'key ' + s[0] }, s[1])); });\n"
	"  box.appendChild(legend);\n"
	"  d.history.routes.forEach(function (h) {\n"
	"    var fig = el('figure');\n"
	"    var sum = { v1_ok: 0, v1_failed: 0, v2_ok: 0, v2_failed: 0 };\n"
	"    h.minutes.forEach(function (m) { SERIES.forEach(function (s) { sum[s[0]] += m[s[0]]; }); });\n"
	"    fig.appendChild(el('figcaption', {}, h.route + ': v1 ' + sum.v1_ok + ' ok / ' +\n"
	"      sum.v1_failed + ' failed, v2 ' + sum.v2_ok + ' ok / ' + sum.v2_failed + ' failed'));\n"
	"    fig.appendChild(chart(h.minutes));\n"
	"    box.appendChild(fig);\n"
	"  });\n"
	"}\n"
	"\n"
	"function renderRequests(d) {\n"
	"  var body = clear('request-rows');\n"
	"  d.routes.forEach(function (r) {\n"
	"    Object.keys(r.requests).forEach(function (o) {\n"
	"      if (!r.requests[o]) return;\n"
	"      var tr = el('tr');\n"
	"      tr.appendChild(el('td', {}, r.route === '' ? '(before routing)' : r.route));\n"
	"      tr.appendChild(el('td', {}, r.mode || ''));\n"
	"      tr.appendChild(el('td', {}, o));\n"
	"      tr.appendChild(el('td', { 'class': 'count', 'data-route': r.route, 'data-outcome': o },\n"
	"        r.requests[o]));\n"
	"      body.appendChild(tr);\n"
	"    });\n"
	"  });\n"
	"}\n"
	"\n"
	"function renderShadow(d) {\n"
	"  var box = clear('shadow');\n"
	"  var s = d.shadow;\n"
	"  if (!s) {\n"
	"    box.appendChild(el('p', {}, 'The shadow comparison is off (dry_run.v2_path).'));\n"
	"  } else {\n"
	"    var rate = s.matched ? pct(s.identical / s.matched) : 'nothing compared yet';\n"
	"    box.appendChild(el('p', { id: 'identical-rate' }, 'Identical: ' + rate + ' (' +\n"
	"      s.identical + ' of ' + s.matched + ' compared; ' + s.different + ' different)'));\n"
	"    var t = el('table');\n"
	"    var hd = el('tr');\n"
	"    ['differing v2 path', 'count', 'rule'].forEach(function (h) { hd.appendChild(el('th', {}, h)); });\n"
	"    t.appendChild(hd);\n"
	"    s.top_paths.forEach(function (p) {\n"
	"      var tr = el('tr');\n"
	"      tr.appendChild(el('td', { 'class': 'mono' }, p.path));\n"
	"      tr.appendChild(el('td', {}, p.count));\n"
	"      tr.appendChild(el('td', { 'class': 'mono' }, p.rule === null ? '(no trace)' : p.rule));\n"
	"      t.appendChild(tr);\n"
	"    });\n"
	"    box.appendChild(t);\n"
	"  }\n"
	"  var u = el('table');\n"
	"  var uh = el('tr');\n"
	"  ['route', 'unmapped v1 key', 'posts'].forEach(function (h) { uh.appendChild(el('th', {}, h)); });\n"
	"  u.appendChild(uh);\n"
	"  d.unmapped.forEach(function (x) {\n"
	"    var tr = el('tr');\n"
	"    tr.appendChild(el('td', {}, x.route));\n"
	"    tr.appendChild(el('td', { 'class': 'mono' }, x.variable));\n"
	"    tr.appendChild(el('td', {}, x.count));\n"
	"    u.appendChild(tr);\n"
	"  });\n"
	"  if (!d.unmapped.length) u.appendChild(el('tr')).appendChild(el('td', { colspan: '3' }, 'none'));\n"
	"  box.appendChild(u);\n"
	"}\n"
	"\n"
	"function renderQueue(d) {\n"
	"  var box = clear('queue');\n"
	"  if (!d.queue) { box.appendChild(el('p', {}, 'No queued delivery.')); return; }\n"
	"  [['depth', d.queue.depth], ['oldest (s)', d.queue.oldest_age_s],\n"
	"    ['dead letters', d.queue.dead_letters], ['in flight', d.queue.in_flight]].forEach(function (x) {\n"
	"    var c = el('div', { 'class': 'tile' });\n"
	"    c.appendChild(el('div', { 'class': 'big' }, x[1]));\n"
	"    c.appendChild(el('div', { 'class': 'small' }, x[0]));\n"
	"    box.appendChild(c);\n"
	"  });\n"
	"}\n"
	"\n"
	"function renderErrors(d) {\n"
	"  var list = clear('errors');\n"
	"  if (!d.errors.length) list.appendChild(el('li', {}, 'none since the start'));\n"
	"  d.errors.slice().reverse().forEach(function (e) {\n"
	"    var li = el('li', { 'class': 'lvl-' + e.level });\n"
	"    li.appendChild(el('span', { 'class': 'mono small' }, e.time + ' ' + e.level + ' '));\n"
	"    li.appendChild(el('b', {}, e.event));\n"
	"    li.appendChild(el('span', {}, ' ' + (e.message || e.error || e.route || '')));\n"
	"    list.appendChild(li);\n"
	"  });\n"
	"}\n"
	"\n"
	"function refresh() {\n"
	"  return Promise.all([getJSON('/cutover'), getJSON('/console/data')]).then(function (v) {\n"
	"    token = v[0].csrf_token;\n"
	"    renderCutover(v[0]);\n"
	"    renderTraffic(v[1]);\n"
	"    renderRequests(v[1]);\n"
	"    renderShadow(v[1]);\n"
	"    renderQueue(v[1]);\n"
	"    renderErrors(v[1]);\n"
	"    document.getElementById('ready').textContent = v[1].ready.status === 200\n"
	"      ? 'ready' : 'not ready: ' + v[1].ready.message;\n"
	"    document.getElementById('updated').textContent = new Date(v[1].time_ms).toISOString();\n"
	"    document.body.setAttribute('data-loaded', '1');\n"
	"  }).catch(function (e) { say(String(e.message || e), true); });\n"
	"}\n"
	"\n"
	"document.addEventListener('DOMContentLoaded', function () {\n"
	"  document.getElementById('kill-all').addEventListener('click', function () {\n"
	"    change(null, {}, 'Put v1 back as primary on EVERY route?');\n"
	"  });\n"
	"  refresh();\n"
	"  window.setInterval(refresh, 3000);\n"
	"});\n";

static const char console_icon[] =
	"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='16' rx='3' fill='#1d2330'/><path d='M3 11h4V5h6' stroke='#1f8a4c' stroke-width='2' fill='none'/></svg>\n";
/* clang-format on */

static const struct {
	const char *path, *type, *body;
} assets[] = {
	{ "/", "text/html; charset=utf-8", console_html },
	{ "/console.js", "text/javascript; charset=utf-8", console_js },
	{ "/console.css", "text/css; charset=utf-8", console_css },
	{ "/favicon.svg", "image/svg+xml", console_icon },
};

int console_asset(const char *path, const char **ret_type, const char **ret_body)
{
	for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++)
		if (strcmp(path, assets[i].path) == 0) {
			*ret_type = assets[i].type;
			*ret_body = assets[i].body;
			return 1;
		}
	return 0;
}

char *console_data_json(const struct admin_view *v)
{
	struct evbuffer *b = evbuffer_new();
	long long now_ms;
	char why[256], esc[600], *part;
	int ready;
	size_t n;

	if (!b)
		return NULL;
	now_ms = clock_wall_ms();
	ready = admin_readiness(v, why, sizeof(why));
	json_escape_quoted(esc, sizeof(esc), ready == 200 ? "" : why);
	evbuffer_add_printf(b, "{\"time_ms\":%lld,\"ready\":{\"status\":%d,\"message\":%s}", now_ms,
			    ready, esc);
	evbuffer_add_printf(b, ",\"routes\":");
	metrics_requests_json(v->metrics, b);
	part = v->cutover ? cutover_history_json(v->cutover, v->cfg, now_ms) : NULL;
	evbuffer_add_printf(b, ",\"history\":%s", part ? part : "{\"routes\":[]}");
	free(part);
	part = v->shadow ? shadow_summary_json(v->shadow, 10) : NULL;
	evbuffer_add_printf(b, ",\"shadow\":%s", part ? part : "null");
	free(part);
	evbuffer_add_printf(b, ",\"unmapped\":");
	metrics_unmapped_json(v->metrics, b);
	if (v->queue) {
		struct queue_stats qs;

		queue_stats(v->queue, &qs);
		evbuffer_add_printf(b,
				    ",\"queue\":{\"depth\":%lld,\"oldest_age_s\":%lld,"
				    "\"dead_letters\":%lld,\"in_flight\":%lld}",
				    qs.depth, qs.oldest_age_ms / 1000, qs.dead, qs.in_flight);
	} else {
		evbuffer_add_printf(b, ",\"queue\":null");
	}
	evbuffer_add_printf(b, ",\"errors\":");
	log_recent_json(b);
	evbuffer_add(b, "}", 1);
	n = evbuffer_get_length(b);
	part = malloc(n + 1);
	if (part) {
		evbuffer_remove(b, part, n);
		part[n] = '\0';
	}
	evbuffer_free(b);
	return part;
}
