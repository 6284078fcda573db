package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"berth.dev/berth/internal/golden"
	"berth.dev/berth/render"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// assertGolden compares got with testdata/name, or rewrites the file with
// -update.
func assertGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden.Check(t, name, string(got), *update)
}

func loadDir(t *testing.T, dir string) *render.Desired {
	t.Helper()
	d, err := render.Load(context.Background(), os.DirFS(dir), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGolden plans testdata/fleet/from → testdata/fleet/to and compares
// every rendering with its golden file.
func TestGolden(t *testing.T) {
	from := loadDir(t, "testdata/fleet/from")
	to := loadDir(t, "testdata/fleet/to")
	plans := map[string]*Plan{
		"plan": NewPlan(
			Revision{Rev: "main", Commit: "3f2a9c1e5b7d4a6c8e0f1a2b3c4d5e6f7a8b9c0d", Desired: from},
			Revision{Rev: "feature/checkout-v2", Commit: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807", Desired: to}),
		"nochange": NewPlan(
			Revision{Rev: "HEAD~1", Commit: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807", Desired: to},
			Revision{Rev: "HEAD", Commit: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807", Desired: loadDir(t, "testdata/fleet/to")}),
	}
	for name, p := range plans {
		for _, out := range []struct {
			ext   string
			write func(io.Writer) error
		}{
			{".txt", func(w io.Writer) error { return p.WriteText(w, false) }},
			{".color.txt", func(w io.Writer) error { return p.WriteText(w, true) }},
			{".md", p.WriteMarkdown},
			{".json", p.WriteJSON},
		} {
			t.Run(name+out.ext, func(t *testing.T) {
				var b bytes.Buffer
				if err := out.write(&b); err != nil {
					t.Fatal(err)
				}
				assertGolden(t, name+out.ext, b.Bytes())
				if out.ext == ".json" && !json.Valid(b.Bytes()) {
					t.Error("invalid JSON")
				}
				if out.ext != ".color.txt" && strings.Contains(b.String(), "\x1b[") {
					t.Error("ANSI escape without color")
				}
				for _, secret := range []string{"correct-horse-battery-staple", "Tr0ub4dor"} {
					if strings.Contains(b.String(), secret) {
						t.Errorf("output contains the secret %q", secret)
					}
				}
			})
		}
	}
	if plans["nochange"].HasChanges() || !plans["plan"].HasChanges() {
		t.Error("HasChanges is wrong")
	}
}

// TestJSONShape checks the keys tools rely on, including [] for empty
// lists.
func TestJSONShape(t *testing.T) {
	var b bytes.Buffer
	if err := NewPlan(Revision{}, Revision{}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	want := `{
  "from": "",
  "to": "",
  "fromRev": "",
  "toRev": "",
  "changes": [],
  "diagnostics": [],
  "summary": {
    "add": 0,
    "change": 0,
    "destroy": 0
  }
}
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("empty plan (-want +got):\n%s", d)
	}
}

// TestMarkdownEscapes feeds values that would break out of a code block or
// inject markup into a pull-request comment.
func TestMarkdownEscapes(t *testing.T) {
	p := &Plan{
		FromRev: "a", ToRev: "b",
		Changes: []Change{{
			Action: ActionUpdate, APIVersion: "v1", Kind: "ConfigMap", Namespace: "default", Name: "c",
			Fields: []FieldChange{
				{Path: "data[x]", Op: OpChange, Before: "```\n<script>alert(1)</script>", After: "ok"},
				{Path: "data[y]", Op: OpAdd, After: "\x1b[31mred"},
			},
			Consequence: "files update in place for <b>@everyone</b> | cell",
		}},
		Diagnostics: render.Diagnostics{{Severity: render.SeverityWarning, Pos: render.Pos{File: "a.yaml", Line: 1, Column: 1},
			Message: "see [here](http://x) *now* #1"}},
	}
	p.Summary = Summarize(p.Changes)
	var b bytes.Buffer
	if err := p.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "````diff") {
		t.Errorf("the fence must be longer than the backticks in a value:\n%s", out)
	}
	// Outside the fenced block, nothing may be markup.
	outside := out[:strings.Index(out, "````diff")] + out[strings.LastIndex(out, "````")+4:]
	for _, bad := range []string{"<b>", " @everyone", "[here](", " *now*", " #1", "\x1b"} {
		if strings.Contains(outside, bad) {
			t.Errorf("markdown contains %q unescaped:\n%s", bad, out)
		}
	}
	if !strings.Contains(outside, ` \| cell |`) {
		t.Errorf("a pipe in a table cell must be escaped:\n%s", out)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("an escape sequence reached the comment:\n%q", out)
	}
	var text bytes.Buffer
	if err := p.WriteText(&text, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text.String(), "\x1b") {
		t.Errorf("a value's escape sequence reached the terminal:\n%q", text.String())
	}
}
