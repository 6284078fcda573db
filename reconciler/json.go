package reconciler

import (
	"encoding/json"
	"io"
)

// The JSON form of a plan. Keys come in a fixed order, every key is always
// present, and empty lists are [] rather than null, so that tools can
// read it without special cases.
type (
	jsonPlan struct {
		From        string           `json:"from"`
		To          string           `json:"to"`
		FromRev     string           `json:"fromRev"`
		ToRev       string           `json:"toRev"`
		Changes     []jsonChange     `json:"changes"`
		Diagnostics []jsonDiagnostic `json:"diagnostics"`
		Summary     jsonSummary      `json:"summary"`
	}
	jsonChange struct {
		Action      Action      `json:"action"`
		APIVersion  string      `json:"apiVersion"`
		Kind        string      `json:"kind"`
		Namespace   string      `json:"namespace"`
		Name        string      `json:"name"`
		Object      string      `json:"object"`
		File        string      `json:"file"`
		Line        int         `json:"line"`
		Column      int         `json:"column"`
		Reason      string      `json:"reason"`
		Consequence string      `json:"consequence"`
		Fields      []jsonField `json:"fields"`
	}
	jsonField struct {
		Path      string  `json:"path"`
		Op        FieldOp `json:"op"`
		Before    any     `json:"before"`
		After     any     `json:"after"`
		Sensitive bool    `json:"sensitive"`
	}
	jsonDiagnostic struct {
		Severity string `json:"severity"`
		File     string `json:"file"`
		Line     int    `json:"line"`
		Column   int    `json:"column"`
		Object   string `json:"object"`
		Field    string `json:"field"`
		Message  string `json:"message"`
	}
	jsonSummary struct {
		Add     int `json:"add"`
		Change  int `json:"change"`
		Destroy int `json:"destroy"`
	}
)

// WriteJSON writes the plan as one indented JSON document:
//
//	{"from", "to", "fromRev", "toRev",
//	 "changes": [{"action", "apiVersion", "kind", "namespace", "name",
//	              "object", "file", "line", "column", "reason", "consequence",
//	              "fields": [{"path", "op", "before", "after", "sensitive"}]}],
//	 "diagnostics": [{"severity", "file", "line", "column", "object", "field", "message"}],
//	 "summary": {"add", "change", "destroy"}}
//
// before and after are null when a field is absent on that side, and
// always null when sensitive is true.
func (p *Plan) WriteJSON(w io.Writer) error {
	out := jsonPlan{
		From: p.From, To: p.To, FromRev: p.FromRev, ToRev: p.ToRev,
		Changes:     make([]jsonChange, 0, len(p.Changes)),
		Diagnostics: make([]jsonDiagnostic, 0, len(p.Diagnostics)),
		Summary:     jsonSummary{Add: p.Summary.Add, Change: p.Summary.Change, Destroy: p.Summary.Destroy},
	}
	for i := range p.Changes {
		c := &p.Changes[i]
		jc := jsonChange{
			Action: c.Action, APIVersion: c.APIVersion, Kind: c.Kind, Namespace: c.Namespace, Name: c.Name,
			Object: c.Ref(), File: c.Pos.File, Line: c.Pos.Line, Column: c.Pos.Column,
			Reason: c.Reason, Consequence: c.Consequence,
			Fields: make([]jsonField, 0, len(c.Fields)),
		}
		for _, f := range c.Fields {
			jf := jsonField{Path: f.Path, Op: f.Op, Before: f.Before, After: f.After, Sensitive: f.Sensitive}
			if f.Sensitive {
				jf.Before, jf.After = nil, nil
			}
			jc.Fields = append(jc.Fields, jf)
		}
		out.Changes = append(out.Changes, jc)
	}
	for _, d := range p.Diagnostics {
		out.Diagnostics = append(out.Diagnostics, jsonDiagnostic{
			Severity: string(d.Severity), File: d.File, Line: d.Line, Column: d.Column,
			Object: d.Object, Field: d.Field, Message: d.Message,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
