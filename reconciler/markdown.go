package reconciler

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteMarkdown writes the plan as a pull-request comment: a heading with
// the summary, a table of the changed objects with what happens to each,
// the changed fields of each object in a fenced diff block, and the
// diagnostics as a list. Everything taken from the repository is escaped,
// so that a value cannot break out of its block or inject markup, and
// secrets print as "(sensitive value)".
func (p *Plan) WriteMarkdown(w io.Writer) error {
	b := bufio.NewWriter(w)
	if p.HasChanges() {
		fmt.Fprintf(b, "### %s\n\n", mdText(strings.TrimSuffix(summaryLine(p.Summary), ".")))
	} else {
		fmt.Fprintf(b, "### No changes\n\n")
	}
	fmt.Fprintf(b, "%s → %s\n", mdCode(p.fromLabel()), mdCode(p.toLabel()))
	if p.HasChanges() {
		fmt.Fprintf(b, "\n| | Object | Change | Consequence |\n|:-:|---|---|---|\n")
		for i := range p.Changes {
			c := &p.Changes[i]
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", mdSymbol(c.Action), mdCell(mdCode(c.Ref())),
				mdCell(mdText(actionWord(c))), mdCell(mdText(c.Consequence)))
		}
		for i := range p.Changes {
			if c := &p.Changes[i]; len(c.Fields) > 0 {
				mdFields(b, c)
			}
		}
	} else {
		fmt.Fprintf(b, "\nThe fleet matches %s.\n", mdCode(p.toLabel()))
	}
	if len(p.Diagnostics) > 0 {
		fmt.Fprintf(b, "\n#### Diagnostics\n\n")
		for _, d := range p.Diagnostics {
			fmt.Fprintf(b, "- **%s** ", mdText(string(d.Severity)))
			if d.File != "" {
				fmt.Fprintf(b, "%s: ", mdCode(d.Pos.String()))
			}
			if d.Object != "" {
				fmt.Fprintf(b, "%s: ", mdCode(d.Object))
			}
			if d.Field != "" {
				fmt.Fprintf(b, "%s: ", mdCode(d.Field))
			}
			fmt.Fprintf(b, "%s\n", mdText(d.Message))
		}
	}
	if n := p.Diagnostics.Errors(); n > 0 {
		fmt.Fprintf(b, "\n> [!CAUTION]\n> %s\n", mdText(errorNote(n, p.toLabel())))
	}
	return b.Flush()
}

func mdSymbol(a Action) string {
	switch a {
	case ActionCreate:
		return "+"
	case ActionUpdate:
		return "~"
	case ActionDelete:
		return "−"
	case ActionReplace:
		return "∓"
	}
	return ""
}

// mdFields writes the changed fields of one object as a diff block.
func mdFields(b *bufio.Writer, c *Change) {
	var lines []string
	add := func(op byte, s string) { lines = append(lines, string(op)+" "+safe(s)) }
	for i := range c.Fields {
		f := &c.Fields[i]
		if f.Sensitive {
			if f.Op != OpAdd {
				add('-', f.Path+": "+sensitiveValue)
			}
			if f.Op != OpRemove {
				add('+', f.Path+": "+sensitiveValue)
			}
			continue
		}
		if dl, ok := multiline(f); ok {
			add(' ', f.Path+":")
			for _, l := range dl {
				switch l.op {
				case '~':
					add(' ', "  ⋮")
				default:
					add(l.op, "  "+l.text)
				}
			}
			continue
		}
		if f.Before != nil {
			add('-', f.Path+": "+formatValue(f.Before))
		}
		if f.After != nil {
			add('+', f.Path+": "+formatValue(f.After))
		}
	}
	fence := codeFence(lines)
	fmt.Fprintf(b, "\n**%s** %s\n\n%sdiff\n%s\n%s\n", mdSymbol(c.Action), mdCode(c.Ref()), fence, strings.Join(lines, "\n"), fence)
}

// codeFence returns a run of backticks longer than any in lines.
func codeFence(lines []string) string {
	n := 3
	for _, l := range lines {
		run := 0
		for _, r := range l {
			if r == '`' {
				run++
				n = max(n, run+1)
			} else {
				run = 0
			}
		}
	}
	return strings.Repeat("`", n)
}

// mdCode writes s as an inline code span, with a delimiter longer than any
// run of backticks in it.
func mdCode(s string) string {
	s = safe(strings.ReplaceAll(s, "\n", " "))
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	d := strings.Repeat("`", longest+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return d + " " + s + " " + d
	}
	return d + s + d
}

// mdText escapes the characters that Markdown (GitHub's flavour) would
// take as markup, HTML, a mention (@user) or an issue reference (#1).
// Pipes are left to mdCell.
func mdText(s string) string {
	var b strings.Builder
	for _, r := range safe(strings.ReplaceAll(s, "\n", " ")) {
		if strings.ContainsRune("\\`*_[]<>#~&@", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mdCell makes text safe inside a table cell, where a pipe ends the cell
// even inside a code span.
func mdCell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
