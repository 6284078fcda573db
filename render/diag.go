package render

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a repository file. Line and Column count from 1; a
// zero Line means the file as a whole.
type Pos struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
}

func (p Pos) String() string {
	switch {
	case p.File == "":
		return "-"
	case p.Line == 0:
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Severity ranks a diagnostic.
type Severity string

// Severities, from worst.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityNote    Severity = "note"
)

// Diagnostic is one finding about the repository, tied to a place in it.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	Pos
	// Object is "Kind ns/name" (or "Kind name" for cluster-scoped kinds),
	// empty when the finding is about a file rather than an object.
	Object string `json:"object,omitempty"`
	// Field is the field path in Kubernetes notation, e.g.
	// spec.template.spec.containers[0].image.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// String formats the diagnostic as FILE:LINE:COL: severity: Object: field: message.
func (d Diagnostic) String() string {
	var b strings.Builder
	if d.File != "" {
		b.WriteString(d.Pos.String())
		b.WriteString(": ")
	}
	b.WriteString(string(d.Severity))
	b.WriteString(": ")
	if d.Object != "" {
		b.WriteString(d.Object)
		b.WriteString(": ")
	}
	if d.Field != "" {
		b.WriteString(d.Field)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Diagnostics is a list of findings.
type Diagnostics []Diagnostic

// Sort orders diagnostics by file, line, column, then severity and text, so
// that output is stable whatever order the checks ran in.
func (ds Diagnostics) Sort() {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(sevRank(a.Severity), sevRank(b.Severity)),
			cmp.Compare(a.Object, b.Object),
			cmp.Compare(a.Field, b.Field),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

func sevRank(s Severity) int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// Errors returns how many diagnostics are errors.
func (ds Diagnostics) Errors() int {
	n := 0
	for _, d := range ds {
		if d.Severity == SeverityError {
			n++
		}
	}
	return n
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool { return ds.Errors() > 0 }

// ErrInvalid is wrapped by the error a load returns when the repository has
// validation errors.
var ErrInvalid = errors.New("invalid repository")

// ErrorLines are the error diagnostics, each as its String.
func (ds Diagnostics) ErrorLines() []string {
	var out []string
	for _, d := range ds {
		if d.Severity == SeverityError {
			out = append(out, d.String())
		}
	}
	return out
}

// Err returns nil when there are no errors, or an error wrapping ErrInvalid
// that lists every error diagnostic, one a line.
func (ds Diagnostics) Err() error {
	lines := ds.ErrorLines()
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d error(s):\n%s", ErrInvalid, len(lines), strings.Join(lines, "\n"))
}
