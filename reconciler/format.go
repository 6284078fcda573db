package reconciler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// Helpers shared by the text and Markdown renderings of a plan.

const sensitiveValue = "(sensitive value)"

// formatValue prints a JSON value compactly: strings quoted, numbers bare,
// maps with sorted keys. Control characters come out escaped, so a value
// cannot move a terminal's cursor or colour.
func formatValue(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("%v", v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// safe escapes the control characters (other than tab) of a line meant
// for a terminal or a Markdown block.
func safe(s string) string {
	if strings.IndexFunc(s, isUnsafe) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isUnsafe(r) {
			q := fmt.Sprintf("%q", string(r))
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isUnsafe(r rune) bool {
	return r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r))
}

// revLabel names one side of a plan: "HEAD~1 (0a1b2c3d)", or whichever of
// the two is known.
func revLabel(rev, commit string) string {
	short := commit
	if len(short) > 8 {
		short = short[:8]
	}
	switch {
	case rev != "" && commit != "" && !strings.HasPrefix(commit, rev):
		return rev + " (" + short + ")"
	case commit != "":
		return short
	case rev != "":
		return rev
	}
	return "(empty)"
}

func (p *Plan) fromLabel() string { return safe(revLabel(p.FromRev, p.From)) }
func (p *Plan) toLabel() string   { return safe(revLabel(p.ToRev, p.To)) }

// actionWord is how a plan line names an action.
func actionWord(c *Change) string {
	switch c.Action {
	case ActionCreate:
		return "created"
	case ActionUpdate:
		return "updated"
	case ActionDelete:
		return "deleted"
	case ActionReplace:
		if c.Reason != "" {
			return "replaced: " + c.Reason
		}
		return "replaced"
	}
	return string(c.Action)
}

func summaryLine(s Summary) string {
	return fmt.Sprintf("Plan: %d to add, %d to change, %d to destroy.", s.Add, s.Change, s.Destroy)
}

// diffLine is one line of a line-by-line comparison of two texts: op is
// ' ' (same), '-', '+', or '~' for a run of unchanged lines left out.
type diffLine struct {
	op   byte
	text string
}

// Limits of the line diff: beyond them a multi-line value is shown whole.
const (
	diffContext  = 2       // unchanged lines shown around a change
	maxDiffCells = 1 << 22 // lines before × lines after, for the LCS table
)

// multiline returns the line diff of a field whose value is or was a
// string of several lines, or false when it is better shown as one value.
func multiline(f *FieldChange) ([]diffLine, bool) {
	if f.Sensitive {
		return nil, false
	}
	a, okA := f.Before.(string)
	b, okB := f.After.(string)
	if !(okA || f.Before == nil) || !(okB || f.After == nil) ||
		!strings.Contains(a, "\n") && !strings.Contains(b, "\n") {
		return nil, false
	}
	lines := lineDiff(splitLines(a, okA), splitLines(b, okB))
	changed := false
	for _, l := range lines {
		if l.op == '-' || l.op == '+' {
			changed = true
		}
	}
	if !changed {
		return nil, false // different only in a final newline or \r
	}
	return lines, true
}

func splitLines(s string, present bool) []string {
	if !present {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// lineDiff compares two lists of lines by longest common subsequence and
// keeps diffContext unchanged lines around each change.
func lineDiff(a, b []string) []diffLine {
	// Common head and tail first: a config file usually changes in a few
	// places.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var all []diffLine
	for _, l := range a[:pre] {
		all = append(all, diffLine{' ', l})
	}
	all = append(all, lcsDiff(a[pre:len(a)-suf], b[pre:len(b)-suf])...)
	for _, l := range a[len(a)-suf:] {
		all = append(all, diffLine{' ', l})
	}
	// Keep only context around changes.
	keep := make([]bool, len(all))
	for i, l := range all {
		if l.op != ' ' {
			for j := max(0, i-diffContext); j <= min(len(all)-1, i+diffContext); j++ {
				keep[j] = true
			}
		}
	}
	var out []diffLine
	for i, l := range all {
		switch {
		case keep[i]:
			out = append(out, l)
		case len(out) == 0 || out[len(out)-1].op != '~':
			out = append(out, diffLine{op: '~'})
		}
	}
	return out
}

func lcsDiff(a, b []string) []diffLine {
	var out []diffLine
	if len(a)*len(b) > maxDiffCells {
		for _, l := range a {
			out = append(out, diffLine{'-', l})
		}
		for _, l := range b {
			out = append(out, diffLine{'+', l})
		}
		return out
	}
	// lcs[i][j] is the length of the LCS of a[i:] and b[j:].
	w := len(b) + 1
	lcs := make([]int32, (len(a)+1)*w)
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i*w+j] = lcs[(i+1)*w+j+1] + 1
			} else {
				lcs[i*w+j] = max(lcs[(i+1)*w+j], lcs[i*w+j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			out = append(out, diffLine{' ', a[i]})
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[(i+1)*w+j] >= lcs[i*w+j+1]):
			out = append(out, diffLine{'-', a[i]})
			i++
		default:
			out = append(out, diffLine{'+', b[j]})
			j++
		}
	}
	return out
}
