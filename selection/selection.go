package selection

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// Candidate is one version of an artifact, as the registry describes it.
type Candidate struct {
	// Version is the tag, a semantic version when ordering falls back to it.
	Version string
	// Digest of the version's manifest.
	Digest string
	// Metrics are the numbers of the version's metrics referrers.
	Metrics map[string]float64
	// Metadata are the model's string metadata: task, framework, name.
	Metadata map[string]string
}

// Policy is a compiled choice: Require, then Order, then the newest
// semantic version.
type Policy struct {
	require []compiled
	order   []orderKey
}

type compiled struct {
	text string
	prg  cel.Program
}

type orderKey struct {
	compiled
	ascending bool
}

// maxExpression bounds one expression's text; CEL's own cost limit bounds
// its evaluation.
const maxExpression = 1024

// Compile checks require (each a CEL expression of type bool) and order
// (each a CEL expression of type double or int, optionally followed by
// " asc" or " desc"; desc, the larger first, when neither). The variables
// are metrics (map of string to double), metadata (map of string to
// string) and version (string). An error names the expression and what is
// wrong with it.
func Compile(require, order []string) (*Policy, error) {
	env, err := cel.NewEnv(
		cel.Variable("metrics", cel.MapType(cel.StringType, cel.DoubleType)),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("version", cel.StringType),
		// metrics.latency_ms <= 20, as people write it, not 20.0.
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	for _, text := range require {
		c, err := compile(env, text, "require", cel.BoolType)
		if err != nil {
			return nil, err
		}
		p.require = append(p.require, c)
	}
	for _, text := range order {
		key := orderKey{}
		expr := strings.TrimSpace(text)
		switch {
		case strings.HasSuffix(expr, " asc"):
			expr, key.ascending = strings.TrimSuffix(expr, " asc"), true
		case strings.HasSuffix(expr, " desc"):
			expr = strings.TrimSuffix(expr, " desc")
		}
		c, err := compile(env, expr, "order", cel.DoubleType, cel.IntType)
		if err != nil {
			return nil, err
		}
		c.text = text
		key.compiled = c
		p.order = append(p.order, key)
	}
	return p, nil
}

func compile(env *cel.Env, text, what string, want ...*cel.Type) (compiled, error) {
	if len(text) > maxExpression {
		return compiled{}, fmt.Errorf("%s expression of %d characters: at most %d", what, len(text), maxExpression)
	}
	ast, iss := env.Compile(text)
	if iss.Err() != nil {
		return compiled{}, fmt.Errorf("%s %q: %v", what, text, iss.Err())
	}
	ok := false
	for _, t := range want {
		ok = ok || ast.OutputType().IsExactType(t)
	}
	if !ok {
		return compiled{}, fmt.Errorf("%s %q is of type %s, want %s", what, text, ast.OutputType(), typeNames(want))
	}
	prg, err := env.Program(ast, cel.CostLimit(100_000))
	if err != nil {
		return compiled{}, fmt.Errorf("%s %q: %v", what, text, err)
	}
	return compiled{text: text, prg: prg}, nil
}

func typeNames(ts []*cel.Type) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.String())
	}
	return strings.Join(names, " or ")
}

// Refusal is a candidate that failed a requirement, and why.
type Refusal struct {
	Candidate Candidate
	// Require is the expression it failed.
	Require string
	// Err is set when the expression could not be evaluated for it, such
	// as a metric it has none of.
	Err error
}

func (r Refusal) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s: %s: %v", r.Candidate.Version, r.Require, r.Err)
	}
	return fmt.Sprintf("%s: fails %s", r.Candidate.Version, r.Require)
}

// Choice is what Choose decided.
type Choice struct {
	// Ranked are the candidates that passed every requirement, best first.
	Ranked []Candidate
	// Refused are those that did not, in the order given.
	Refused []Refusal
}

// Best is the winner, if any candidate passed.
func (c Choice) Best() (Candidate, bool) {
	if len(c.Ranked) == 0 {
		return Candidate{}, false
	}
	return c.Ranked[0], true
}

// Choose applies the policy to candidates. A candidate for which an
// expression cannot be evaluated (a missing metric) fails that requirement;
// one without a value for an order key ranks after those with one.
func (p *Policy) Choose(candidates []Candidate) Choice {
	var ch Choice
	type ranked struct {
		c    Candidate
		keys []*float64
		ver  *semver.Version
	}
	var pass []ranked
	for _, c := range candidates {
		vars := map[string]any{"metrics": nonNil(c.Metrics), "metadata": nonNil(c.Metadata), "version": c.Version}
		refused := false
		for _, r := range p.require {
			out, _, err := r.prg.Eval(vars)
			if err != nil || out != types.True {
				ch.Refused = append(ch.Refused, Refusal{Candidate: c, Require: r.text, Err: err})
				refused = true
				break
			}
		}
		if refused {
			continue
		}
		rk := ranked{c: c}
		for _, o := range p.order {
			out, _, err := o.prg.Eval(vars)
			rk.keys = append(rk.keys, number(out, err))
		}
		rk.ver, _ = semver.NewVersion(c.Version)
		pass = append(pass, rk)
	}
	slices.SortStableFunc(pass, func(a, b ranked) int {
		for i, o := range p.order {
			x, y := a.keys[i], b.keys[i]
			switch {
			case x == nil && y == nil:
				continue
			case x == nil:
				return 1
			case y == nil:
				return -1
			}
			if c := cmp.Compare(*x, *y); c != 0 {
				if o.ascending {
					return c
				}
				return -c
			}
		}
		switch {
		case a.ver == nil && b.ver == nil:
			return 0
		case a.ver == nil:
			return 1
		case b.ver == nil:
			return -1
		}
		return b.ver.Compare(a.ver)
	})
	for _, r := range pass {
		ch.Ranked = append(ch.Ranked, r.c)
	}
	return ch
}

func number(v ref.Val, err error) *float64 {
	if err != nil {
		return nil
	}
	switch n := v.Value().(type) {
	case float64:
		return &n
	case int64:
		f := float64(n)
		return &f
	}
	return nil
}

func nonNil[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}
