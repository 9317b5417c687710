package selection

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Summary says in one line why the choice fell as it did; an
// InferenceModel's status.resolved.reason and `barge versions` both show
// it. With a winner: "accuracy 0.931, best of 5; 2 fail metrics.accuracy >=
// 0.9". With one candidate, a gate: "accuracy 0.95, passes metrics.accuracy
// >= 0.9". Without a winner: "none of 3 passes: 2 fail metrics.accuracy >=
// 0.9; 1 fails metrics.latency_ms <= 20 (no such key: latency_ms)".
func (p *Policy) Summary(ch Choice) string {
	total := len(ch.Ranked) + len(ch.Refused)
	best, ok := ch.Best()
	if !ok {
		if total == 0 {
			return "no candidates"
		}
		return fmt.Sprintf("none of %d passes: %s", total, p.RefusalSummary(ch))
	}
	var parts []string
	if v := p.orderValues(best); v != "" {
		parts = append(parts, v)
	}
	switch {
	case total == 1 && len(p.require) > 0:
		parts = append(parts, "passes "+p.requirements())
	case total == 1:
		parts = append(parts, "the only candidate")
	case len(p.order) > 0:
		parts = append(parts, fmt.Sprintf("best of %d", total))
	default:
		parts = append(parts, fmt.Sprintf("newest of %d", total))
	}
	out := strings.Join(parts, ", ")
	if len(ch.Refused) > 0 {
		out += "; " + p.RefusalSummary(ch)
	}
	return out
}

// RefusalSummary counts the refused candidates by the expression they
// failed, in the order of require: "2 fail metrics.accuracy >= 0.9; 1
// fails metrics.latency_ms <= 20 (no such key: latency_ms)". The first
// evaluation error of each expression is shown, such as a missing metric,
// with how many it concerns when not all.
func (p *Policy) RefusalSummary(ch Choice) string {
	type group struct {
		n, errs int
		err     error
	}
	groups := map[string]*group{}
	var texts []string
	for _, r := range ch.Refused {
		g, ok := groups[r.Require]
		if !ok {
			g = &group{}
			groups[r.Require] = g
			texts = append(texts, r.Require)
		}
		g.n++
		if r.Err != nil {
			g.errs++
			if g.err == nil {
				g.err = r.Err
			}
		}
	}
	var parts []string
	for _, text := range texts {
		g := groups[text]
		verb := "fail"
		if g.n == 1 {
			verb = "fails"
		}
		s := fmt.Sprintf("%d %s %s", g.n, verb, shorten(text, 80))
		switch {
		case g.errs == g.n:
			s += " (" + shorten(g.err.Error(), 60) + ")"
		case g.errs > 0:
			s += fmt.Sprintf(" (%d of them: %s)", g.errs, shorten(g.err.Error(), 60))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// orderValues shows the winner's value of each order key, a metric by its
// name: "accuracy 0.931, latency_ms 12".
func (p *Policy) orderValues(c Candidate) string {
	vars := map[string]any{"metrics": nonNil(c.Metrics), "metadata": nonNil(c.Metadata), "version": c.Version}
	var parts []string
	for _, o := range p.order {
		label := strings.TrimSpace(o.text)
		label = strings.TrimSuffix(strings.TrimSuffix(label, " asc"), " desc")
		if name, ok := strings.CutPrefix(label, "metrics."); ok && metricName(name) {
			label = name
		}
		label = shorten(label, 40)
		out, _, err := o.prg.Eval(vars)
		if v := number(out, err); v != nil {
			parts = append(parts, label+" "+strconv.FormatFloat(*v, 'g', -1, 64))
		} else {
			parts = append(parts, "no "+label)
		}
	}
	return strings.Join(parts, ", ")
}

func (p *Policy) requirements() string {
	var texts []string
	for _, r := range p.require {
		texts = append(texts, shorten(r.text, 80))
	}
	return strings.Join(texts, " and ")
}

// metricName: a plain identifier, as in metrics.accuracy.
func metricName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// shorten keeps a summary within a condition message's length.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
