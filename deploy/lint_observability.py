#!/usr/bin/env python3
"""Lint Karen's Prometheus rules, their tests and the Grafana dashboards
against the metric contract in deploy/metrics.txt.

Checks:
  * metrics.txt itself is well formed;
  * every metric named in a rule, a rule test or a dashboard query is one of
    the families of metrics.txt (a histogram family NAME stands for
    NAME_bucket, NAME_sum and NAME_count), and every `karen:` recorded series
    a query uses is recorded by the rules;
  * every label a selector matches on belongs to that metric (plus the
    scrape-time labels job and instance, `le` on _bucket series, and
    exported_job for a family whose own label `job` Prometheus renames), and
    every label of a by/without/on/ignoring/group_* clause exists somewhere;
  * every alert has a severity label and summary, description and runbook
    annotations (the runbook naming a heading of the --docs file), and the
    tests hold a case where it fires and one where it does not;
  * every dashboard has a uid and a title, a `datasource` variable of type
    datasource for Prometheus, panels that query through ${datasource},
    unique panel ids, and queries that promtool can parse (Grafana's
    variables replaced by sample values).

Only the Python standard library is used. Exit status 1 on any finding.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# Labels Prometheus adds at scrape time; a family label with one of these
# names is stored as exported_<name> (honor_labels: false, the default).
TARGET_LABELS = ("job", "instance")

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OTHER_KEYWORDS = {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)*(?:\d+(?:[smhdwy]|ms))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
""", re.VERBOSE)


class Findings:
    def __init__(self):
        self.errors = []

    def error(self, where, msg):
        self.errors.append(f"{where}: {msg}")


# ---------------------------------------------------------------------------
# metrics.txt
# ---------------------------------------------------------------------------
def load_metrics(path, findings):
    families = {}
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{n}"
            parts = line.split()
            if len(parts) != 3:
                findings.error(where, f"expected 'NAME TYPE LABELS', got {raw.strip()!r}")
                continue
            name, kind, labels = parts
            if not re.fullmatch(r"karen_[a-z0-9_]+", name):
                findings.error(where, f"bad metric name {name!r}")
            if kind not in ("counter", "gauge", "histogram"):
                findings.error(where, f"bad type {kind!r}")
            if kind == "counter" and not name.endswith("_total"):
                findings.error(where, f"counter {name} should end in _total")
            if kind != "counter" and name.endswith("_total"):
                findings.error(where, f"only counters end in _total: {name}")
            label_list = [] if labels == "-" else labels.split(",")
            for label in label_list:
                if not re.fullmatch(r"[a-z_][a-z0-9_]*", label) or label.startswith("__"):
                    findings.error(where, f"bad label name {label!r}")
                if kind == "histogram" and label == "le":
                    findings.error(where, "a histogram may not have its own 'le' label")
            if name in families:
                findings.error(where, f"duplicate family {name}")
            families[name] = (kind, label_list)
    return families


def series_names(families):
    """Map each series name Prometheus stores to (family, allowed labels)."""
    out = {}
    for name, (kind, labels) in families.items():
        stored = set(TARGET_LABELS)
        for label in labels:
            stored.add(f"exported_{label}" if label in TARGET_LABELS else label)
        if kind == "histogram":
            out[f"{name}_bucket"] = (name, stored | {"le"})
            out[f"{name}_sum"] = (name, stored)
            out[f"{name}_count"] = (name, stored)
        else:
            out[name] = (name, stored)
    return out


# ---------------------------------------------------------------------------
# PromQL scanning
# ---------------------------------------------------------------------------
def tokenize(expr):
    tokens = []
    pos = 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


def scan(expr):
    """Return (metric refs [(name, [matcher labels])], clause labels, created labels)."""
    tokens = tokenize(expr)
    refs, clause_labels, created = [], [], set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "ident":
            low = text.lower()
            if low in LABEL_LIST_KEYWORDS:
                if nxt[1] == "(":
                    j = i + 2
                    while j < len(tokens) and tokens[j][1] != ")":
                        if tokens[j][0] == "ident":
                            clause_labels.append(tokens[j][1])
                        j += 1
                    i = j
            elif low in AGGREGATIONS or low in OTHER_KEYWORDS:
                pass
            elif nxt[1] == "(":
                if text in ("label_replace", "label_join"):
                    # destination label = first string after the first top-level comma
                    depth, j = 0, i + 1
                    while j < len(tokens):
                        t = tokens[j][1]
                        if t == "(":
                            depth += 1
                        elif t == ")":
                            depth -= 1
                            if depth == 0:
                                break
                        elif t == "," and depth == 1:
                            if j + 1 < len(tokens) and tokens[j + 1][0] == "string":
                                created.add(tokens[j + 1][1][1:-1])
                            break
                        j += 1
            else:
                labels = []
                if nxt[1] == "{":
                    j = i + 2
                    while j < len(tokens) and tokens[j][1] != "}":
                        if tokens[j][0] == "ident" and j + 1 < len(tokens) and tokens[j + 1][0] == "op" \
                                and tokens[j + 1][1] in ("=", "!=", "=~", "!~"):
                            labels.append(tokens[j][1])
                        j += 1
                    i = j
                refs.append((text, labels))
        elif kind == "op" and text == "{":
            # a selector without a metric name
            refs.append(("{...}", []))
            while i < len(tokens) and tokens[i][1] != "}":
                i += 1
        i += 1
    return refs, clause_labels, created


class Checker:
    def __init__(self, families, findings):
        self.families = families
        self.series = series_names(families)
        self.findings = findings
        self.recorded = set()
        self.used_families = set()
        self.all_labels = set(TARGET_LABELS) | {"le"}
        for _, allowed in self.series.values():
            self.all_labels |= allowed
        self.count = 0

    def check_expr(self, where, expr, extra_labels=()):
        self.count += 1
        try:
            refs, clause_labels, created = scan(expr)
        except ValueError as e:
            self.findings.error(where, f"unreadable query: {e}")
            return
        known_labels = self.all_labels | created | set(extra_labels)
        for name, labels in refs:
            if name == "{...}":
                self.findings.error(where, "selector without a metric name")
                continue
            if ":" in name:
                if name not in self.recorded:
                    self.findings.error(where, f"recorded series {name} is not recorded by the rules")
                for label in labels:
                    if label not in known_labels:
                        self.findings.error(where, f"unknown label {label!r} on {name}")
                continue
            if name not in self.series:
                self.findings.error(where, f"metric {name} is not in metrics.txt")
                continue
            family, allowed = self.series[name]
            self.used_families.add(family)
            for label in labels:
                if label == "__name__":
                    continue
                if label not in allowed:
                    hint = ""
                    if f"exported_{label}" in allowed:
                        hint = f" (Prometheus stores this family's own '{label}' as 'exported_{label}')"
                    self.findings.error(where, f"label {label!r} is not a label of {name}{hint}")
        for label in clause_labels:
            if label not in known_labels:
                self.findings.error(where, f"label {label!r} (by/on/without clause) exists on no metric")


# ---------------------------------------------------------------------------
# Minimal YAML reading (the files are written in a plain block style)
# ---------------------------------------------------------------------------
def yaml_scalars(path, keys):
    """Yield (line number, key, value) for `key: value` entries, block scalars included."""
    with open(path) as f:
        lines = f.read().split("\n")
    key_re = re.compile(r"^(\s*)(?:-\s+)?(" + "|".join(map(re.escape, keys)) + r"):\s*(.*?)\s*$")
    i = 0
    while i < len(lines):
        m = key_re.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        if lines[i].lstrip().startswith("- "):
            indent += 2
        key, rest = m.group(2), m.group(3)
        start = i + 1
        if rest[:1] in ("|", ">"):
            block = []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                block.append(lines[j])
                j += 1
            value = "\n".join(block).strip()
            i = j
        else:
            value = unquote(rest)
            i += 1
        yield start, key, value


def unquote(s):
    s = re.sub(r"\s+#.*$", "", s) if not s.startswith(("'", '"')) else s
    if s.startswith("'") and s.endswith("'") and len(s) >= 2:
        return s[1:-1].replace("''", "'")
    if s.startswith('"') and s.endswith('"') and len(s) >= 2:
        return json.loads(s)
    return s


def alert_blocks(path):
    """Yield (line, alert name, block text) for every alert in a rules file."""
    with open(path) as f:
        lines = f.read().split("\n")
    starts = [(n, m.group(1)) for n, l in enumerate(lines)
              if (m := re.match(r"^\s*-\s+alert:\s*(\S+)\s*$", l))]
    bounds = [n for n, l in enumerate(lines) if re.match(r"^\s*-\s+(alert|record|name):", l)] + [len(lines)]
    for n, name in starts:
        end = min(b for b in bounds if b > n)
        yield n + 1, name, "\n".join(lines[n:end])


def alert_test_cases(path):
    """Map alert name -> {'fires': n, 'quiet': n} from a promtool test file."""
    with open(path) as f:
        lines = f.read().split("\n")
    cases = {}
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(-\s+)?alertname:\s*(\S+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        name = m.group(3)
        base = len(m.group(1)) + (2 if m.group(2) else 0)
        fires = False
        j = i + 1
        # the rest of this list item: lines indented at least as much as alertname
        while j < len(lines) and (not lines[j].strip() or
                                  (len(lines[j]) - len(lines[j].lstrip()) >= base
                                   and not lines[j].lstrip().startswith("- eval_time")
                                   and not re.match(r"^\s*-\s+(eval_time|alertname):", lines[j]))):
            em = re.match(r"^\s*exp_alerts:\s*(.*?)\s*(#.*)?$", lines[j])
            if em:
                fires = em.group(1) != "[]"
            j += 1
        entry = cases.setdefault(name, {"fires": 0, "quiet": 0})
        entry["fires" if fires else "quiet"] += 1
        i = j
    return cases


# ---------------------------------------------------------------------------
# Rules and tests
# ---------------------------------------------------------------------------
def markdown_anchors(path):
    """GitHub-style anchors of the headings of a Markdown file."""
    anchors = set()
    with open(path) as f:
        for line in f:
            m = re.match(r"^#+\s+(.*?)\s*$", line)
            if m:
                text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
                anchors.add(text.replace(" ", "-"))
    return anchors


def check_rules(checker, rules_path, tests_path, docs_path=None):
    f = checker.findings
    for line, key, value in yaml_scalars(rules_path, ["record"]):
        checker.recorded.add(value)
    for line, key, value in yaml_scalars(rules_path, ["expr"]):
        checker.check_expr(f"{rules_path}:{line}", value)
    alerts = []
    for line, name, block in alert_blocks(rules_path):
        alerts.append(name)
        where = f"{rules_path}:{line} {name}"
        if not re.search(r"^\s+severity:\s*(critical|warning|info)\s*$", block, re.M):
            f.error(where, "no severity label (critical, warning or info)")
        for annotation in ("summary", "description", "runbook"):
            if not re.search(rf"^\s+{annotation}:\s*\S", block, re.M):
                f.error(where, f"no {annotation} annotation")
        runbook = re.search(r"^\s+runbook:\s*\"?([^\"\s]+)", block, re.M)
        if runbook and docs_path:
            target, _, anchor = runbook.group(1).partition("#")
            if os.path.basename(target) != os.path.basename(docs_path):
                f.error(where, f"runbook {runbook.group(1)} does not point into {docs_path}")
            elif anchor not in markdown_anchors(docs_path):
                f.error(where, f"runbook anchor #{anchor} is not a heading of {docs_path}")
        for ref in re.findall(r"\{\{\s*\$labels\.(\w+)", block):
            if ref not in checker.all_labels:
                f.error(where, f"annotation uses unknown label {ref!r}")
    if len(set(alerts)) != len(alerts):
        f.error(rules_path, "duplicate alert names")
    for line, key, value in yaml_scalars(tests_path, ["series", "expr", "labels"]):
        if key == "labels" and ":" in value.split("{", 1)[0]:
            checker.check_expr(f"{tests_path}:{line}", value)
        elif key in ("series", "expr"):
            checker.check_expr(f"{tests_path}:{line}", value)
    cases = alert_test_cases(tests_path)
    for name in alerts:
        c = cases.get(name, {"fires": 0, "quiet": 0})
        if not c["fires"]:
            f.error(tests_path, f"no test case where {name} fires")
        if not c["quiet"]:
            f.error(tests_path, f"no test case where {name} stays quiet")
    for name in cases:
        if name not in alerts:
            f.error(tests_path, f"tests name an alert that does not exist: {name}")
    return alerts


# ---------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------
def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def var_samples(dashboard):
    samples = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h",
               "__range_s": "3600", "__range_ms": "3600000", "__interval_ms": "60000"}
    for v in dashboard.get("templating", {}).get("list", []):
        value = ".*"
        if v.get("type") in ("custom", "constant", "textbox", "interval"):
            cur = v.get("current", {}).get("value") or str(v.get("query", "")).split(",")[0]
            if isinstance(cur, list):
                cur = cur[0] if cur else ""
            if re.fullmatch(r"[0-9.]+[smhdwy]?", str(cur).strip()):
                value = str(cur).strip()
        samples.setdefault(v.get("name"), value)
    return samples


def substitute(expr, samples):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return samples.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def check_dashboard(checker, path, uids, promql_out):
    f = checker.findings
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, ValueError) as e:
        f.error(path, f"not valid JSON: {e}")
        return
    uid, title = d.get("uid"), d.get("title")
    if not uid or not isinstance(uid, str) or len(uid) > 40:
        f.error(path, "uid missing or longer than 40 characters")
    elif uid in uids:
        f.error(path, f"uid {uid} already used by {uids[uid]}")
    else:
        uids[uid] = path
    if not title:
        f.error(path, "title missing")
    if not isinstance(d.get("schemaVersion"), int):
        f.error(path, "schemaVersion missing")
    variables = d.get("templating", {}).get("list", [])
    ds = [v for v in variables if v.get("name") == "datasource"]
    if not ds or ds[0].get("type") != "datasource" or ds[0].get("query") != "prometheus":
        f.error(path, "no variable 'datasource' of type datasource with query prometheus")
    samples = var_samples(d)

    def uses_ds_var(obj):
        ds_ref = obj.get("datasource")
        if isinstance(ds_ref, dict):
            return ds_ref.get("uid") in ("${datasource}", "$datasource")
        return ds_ref in ("${datasource}", "$datasource")

    for v in variables:
        if v.get("type") != "query":
            continue
        where = f"{path} variable {v.get('name')}"
        if not uses_ds_var(v):
            f.error(where, "does not query through ${datasource}")
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*", query or "")
        if not m:
            f.error(where, f"unsupported variable query {query!r} (use label_values)")
            continue
        inner, label = m.group(1), m.group(2)
        if inner:
            checker.check_expr(where, inner)
            promql_out.append((where, substitute(inner, samples)))
            refs, _, _ = scan(inner)
            for name, _ in refs:
                if name in checker.series and label not in checker.series[name][1]:
                    f.error(where, f"label {label!r} is not a label of {name}")
        elif label not in checker.all_labels:
            f.error(where, f"label {label!r} exists on no metric")

    ids = set()
    for p in walk_panels(d.get("panels")):
        pid = p.get("id")
        where = f"{path} panel {pid} {p.get('title', '')!r}"
        if pid in ids:
            f.error(where, "duplicate panel id")
        ids.add(pid)
        if "gridPos" not in p:
            f.error(where, "no gridPos")
        targets = p.get("targets") or []
        if targets and not uses_ds_var(p):
            f.error(where, "panel does not query through ${datasource}")
        for t in targets:
            twhere = f"{where} query {t.get('refId')}"
            if "datasource" in t and not uses_ds_var(t):
                f.error(twhere, "query does not use ${datasource}")
            expr = t.get("expr")
            if not expr:
                f.error(twhere, "empty query")
                continue
            checker.check_expr(twhere, expr)
            promql_out.append((twhere, substitute(expr, samples)))


def promtool_parse(promtool, queries, findings):
    """Let promtool parse every dashboard query, as recording rules of a scratch file."""
    if not queries:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        with open(path, "w") as fh:
            fh.write("groups:\n  - name: dashboard-queries\n    rules:\n")
            for n, (_, expr) in enumerate(queries):
                fh.write(f"      - record: lint:query_{n}\n        expr: {json.dumps(expr)}\n")
        res = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if res.returncode != 0:
            out = res.stdout + res.stderr
            reported = False
            for n, (where, expr) in enumerate(queries):
                if re.search(rf"\blint:query_{n}\b", out) or re.search(rf"rule {n + 1}\b", out):
                    findings.error(where, f"promtool cannot parse {expr!r}")
                    reported = True
            if not reported:
                findings.error("dashboards", "promtool rejected a query:\n" + out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--tests", required=True)
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--docs", help="Markdown file the alerts' runbook annotations point into")
    ap.add_argument("dashboards", nargs="*")
    args = ap.parse_args()

    findings = Findings()
    families = load_metrics(args.metrics, findings)
    checker = Checker(families, findings)
    alerts = check_rules(checker, args.rules, args.tests, args.docs)
    uids, queries = {}, []
    for path in args.dashboards:
        check_dashboard(checker, path, uids, queries)
    promtool_parse(args.promtool, queries, findings)

    unused = sorted(set(families) - checker.used_families)
    print(f"{len(families)} metric families, {len(checker.recorded)} recorded series, "
          f"{len(alerts)} alerts, {len(args.dashboards)} dashboards, "
          f"{checker.count} expressions checked ({len(queries)} dashboard queries parsed by promtool)")
    if unused:
        print("families used by no rule, test or dashboard: " + ", ".join(unused))
    if findings.errors:
        for e in findings.errors:
            print("FAIL " + e)
        print(f"{len(findings.errors)} problem(s) found")
        return 1
    print("metric names, labels, alerts and dashboards: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
