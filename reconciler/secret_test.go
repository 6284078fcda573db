package reconciler

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// TestSecretsNeverLeak plans every kind of Secret change and checks that
// no value, in plain text or base64, appears in any output.
func TestSecretsNeverLeak(t *testing.T) {
	values := []string{
		"hunter2-before-data", "hunter2-after-data", // data, changed
		"tok-before-stringdata", "tok-after-stringdata", // stringData, changed
		"added-key-value", "removed-key-value", // a key added, a key removed
		"created-secret-value", "deleted-secret-value", // whole Secrets
		"annotation-secret-value", // kubectl's last-applied copy
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	from := load(t,
		`apiVersion: v1
kind: Secret
metadata:
  name: db
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"annotation-secret-value"}}'
data:
  password: `+b64("hunter2-before-data")+`
  old: `+b64("removed-key-value")+`
stringData:
  token: tok-before-stringdata
`,
		"apiVersion: v1\nkind: Secret\nmetadata: {name: gone}\nstringData: {k: deleted-secret-value}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: immutable}\nimmutable: true\ndata: {k: "+b64("hunter2-before-data")+"}\n",
	)
	to := load(t,
		`apiVersion: v1
kind: Secret
metadata:
  name: db
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"hunter2-after-data"}}'
data:
  password: `+b64("hunter2-after-data")+`
  new: `+b64("added-key-value")+`
stringData:
  token: tok-after-stringdata
`,
		"apiVersion: v1\nkind: Secret\nmetadata: {name: fresh}\ndata: {k: "+b64("created-secret-value")+"}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: immutable}\nimmutable: true\ndata: {k: "+b64("hunter2-after-data")+"}\n",
	)
	p := NewPlan(Revision{Rev: "a", Desired: from}, Revision{Rev: "b", Desired: to})
	if p.Summary != (Summary{Add: 2, Change: 1, Destroy: 2}) {
		t.Errorf("summary %+v", p.Summary)
	}
	sensitive := 0
	for _, c := range p.Changes {
		if c.Kind != "Secret" {
			t.Errorf("unexpected change %s", c.Ref())
		}
		for _, f := range c.Fields {
			if strings.HasPrefix(f.Path, "data") || strings.HasPrefix(f.Path, "stringData") || strings.Contains(f.Path, "last-applied") {
				if !f.Sensitive || f.Before != nil || f.After != nil {
					t.Errorf("%s %s: not redacted: %+v", c.Ref(), f.Path, f)
				}
				sensitive++
			}
		}
	}
	// db: password, new, old, token, annotation; fresh: k; gone: k; immutable: k.
	if sensitive != 8 {
		t.Errorf("%d sensitive fields, want 8: %+v", sensitive, p.Changes)
	}

	var text, color, md, js bytes.Buffer
	for _, err := range []error{p.WriteText(&text, false), p.WriteText(&color, true), p.WriteMarkdown(&md), p.WriteJSON(&js)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, out := range map[string]string{"text": text.String(), "color": color.String(), "markdown": md.String(), "json": js.String()} {
		for _, v := range values {
			for _, form := range []string{v, b64(v), strings.TrimRight(b64(v), "=")} {
				if strings.Contains(out, form) {
					t.Errorf("%s output contains %q (from %q):\n%s", name, form, v, out)
				}
			}
		}
		if name != "json" && !strings.Contains(out, sensitiveValue) {
			t.Errorf("%s output does not say %q", name, sensitiveValue)
		}
	}
	for _, want := range []string{"~ data[password]: (sensitive value)", "+ data[new]: (sensitive value)", "- data[old]: (sensitive value)",
		"-/+ Secret default/immutable (replaced: data is immutable (immutable: true))"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}
