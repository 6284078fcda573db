package reconciler

import (
	"bufio"
	"fmt"
	"io"

	"berth.dev/berth/render"
)

// ANSI styles of the text plan.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
)

type textWriter struct {
	w     *bufio.Writer
	color bool
}

func (t *textWriter) style(code, s string) string {
	if !t.color || s == "" {
		return s
	}
	return code + s + ansiReset
}

func (t *textWriter) mark(op byte) string {
	switch op {
	case '+':
		return t.style(ansiGreen, "+")
	case '-':
		return t.style(ansiRed, "-")
	case '~':
		return t.style(ansiYellow, "~")
	}
	return " "
}

// WriteText writes the plan for a terminal or a CI log, the way Terraform
// does: a header naming the revisions, one line per changed object with
// its changed fields and consequence below it, the diagnostics of the
// revision planned to, and a summary line. ANSI colours only when color is
// true. Sensitive values print as "(sensitive value)".
func (p *Plan) WriteText(w io.Writer, color bool) error {
	t := &textWriter{w: bufio.NewWriter(w), color: color}
	fmt.Fprintf(t.w, "%s\n", t.style(ansiBold, "berth plan: "+p.fromLabel()+" → "+p.toLabel()))
	for i := range p.Changes {
		t.change(&p.Changes[i])
	}
	if len(p.Diagnostics) > 0 {
		fmt.Fprintf(t.w, "\n%s\n", t.style(ansiBold, "Diagnostics:"))
		for _, d := range p.Diagnostics {
			t.diagnostic(d)
		}
	}
	fmt.Fprintln(t.w)
	if n := p.Diagnostics.Errors(); n > 0 {
		fmt.Fprintf(t.w, "%s\n", t.style(ansiRed, errorNote(n, p.toLabel())))
	}
	if p.HasChanges() {
		fmt.Fprintf(t.w, "%s\n", t.style(ansiBold, summaryLine(p.Summary)))
	} else {
		fmt.Fprintf(t.w, "%s\n", t.style(ansiBold, "No changes. The fleet matches "+p.toLabel()+"."))
	}
	return t.w.Flush()
}

func errorNote(n int, rev string) string {
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("%s has %d error%s: documents that could not be read are missing from this plan.", rev, n, s)
}

func (t *textWriter) change(c *Change) {
	var head string
	switch c.Action {
	case ActionCreate:
		head = "  " + t.mark('+')
	case ActionUpdate:
		head = "  " + t.mark('~')
	case ActionDelete:
		head = "  " + t.mark('-')
	case ActionReplace:
		head = t.mark('-') + "/" + t.mark('+')
	}
	fmt.Fprintf(t.w, "\n%s %s (%s)\n", head, t.style(ansiBold, safe(c.Ref())), safe(actionWord(c)))
	for i := range c.Fields {
		t.field(&c.Fields[i])
	}
	if c.Consequence != "" {
		fmt.Fprintf(t.w, "      %s %s\n", t.style(ansiCyan, "→"), safe(c.Consequence))
	}
}

func (t *textWriter) field(f *FieldChange) {
	op := opMark(f.Op)
	path := safe(f.Path)
	if f.Sensitive {
		fmt.Fprintf(t.w, "      %s %s: %s\n", t.mark(op), path, sensitiveValue)
		return
	}
	if lines, ok := multiline(f); ok {
		fmt.Fprintf(t.w, "      %s %s:\n", t.mark(op), path)
		for _, l := range lines {
			switch l.op {
			case '~':
				fmt.Fprintf(t.w, "            %s\n", t.style(ansiCyan, "⋮"))
			case ' ':
				fmt.Fprintf(t.w, "            %s\n", safe(l.text))
			default:
				fmt.Fprintf(t.w, "          %s %s\n", t.mark(l.op), t.style(lineColor(l.op), safe(l.text)))
			}
		}
		return
	}
	switch f.Op {
	case OpAdd:
		fmt.Fprintf(t.w, "      %s %s: %s\n", t.mark(op), path, formatValue(f.After))
	case OpRemove:
		fmt.Fprintf(t.w, "      %s %s: %s\n", t.mark(op), path, formatValue(f.Before))
	default:
		fmt.Fprintf(t.w, "      %s %s: %s → %s\n", t.mark(op), path, formatValue(f.Before), formatValue(f.After))
	}
}

func lineColor(op byte) string {
	if op == '+' {
		return ansiGreen
	}
	return ansiRed
}

func opMark(op FieldOp) byte {
	switch op {
	case OpAdd:
		return '+'
	case OpRemove:
		return '-'
	}
	return '~'
}

func (t *textWriter) diagnostic(d render.Diagnostic) {
	sev := string(d.Severity)
	switch d.Severity {
	case render.SeverityError:
		sev = t.style(ansiBold+ansiRed, sev)
	case render.SeverityWarning:
		sev = t.style(ansiBold+ansiYellow, sev)
	default:
		sev = t.style(ansiCyan, sev)
	}
	// Diagnostic.String, with the severity styled.
	line := sev + ": "
	if d.File != "" {
		line = safe(d.Pos.String()) + ": " + line
	}
	if d.Object != "" {
		line += safe(d.Object) + ": "
	}
	if d.Field != "" {
		line += safe(d.Field) + ": "
	}
	fmt.Fprintf(t.w, "%s%s\n", line, safe(d.Message))
}
