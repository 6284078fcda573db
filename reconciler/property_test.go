package reconciler

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"gopkg.in/yaml.v3"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

// A generated repository: documents by "Kind/name".
type genRepo map[string]map[string]any

var (
	genName     = rapid.StringMatching(`[a-z][a-z0-9]{0,5}`)
	genLabelKey = rapid.StringMatching(`[a-z]{1,4}`)
	genLabelVal = rapid.StringMatching(`[a-z0-9]{0,4}`)
	// Secret values are the only strings with capitals, so finding one in
	// an output can only be a leak.
	genSecretVal = rapid.StringMatching(`SQ[A-Z]{10}`)
	kinds        = []string{"Deployment", "Service", "ConfigMap", "Secret"}
)

func genDoc(t *rapid.T, kind, name string) map[string]any {
	labels := rapid.MapOfN(genLabelKey, genLabelVal, 0, 3).Draw(t, "labels")
	meta := map[string]any{"name": name}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	doc := map[string]any{"apiVersion": "v1", "kind": kind, "metadata": meta}
	switch kind {
	case "Deployment":
		tmplLabels := maps.Clone(labels)
		if tmplLabels == nil {
			tmplLabels = map[string]string{}
		}
		tmplLabels["app"] = name
		container := map[string]any{
			"name":  "app",
			"image": rapid.SampledFrom([]string{"nginx:1.27", "nginx:1.28", "busybox:1.36", "registry.example/app@sha256:" + strings.Repeat("a", 64)}).Draw(t, "image"),
		}
		var env []any
		for _, n := range rapid.SliceOfNDistinct(rapid.StringMatching(`[A-Z][A-Z_]{0,4}`), 0, 3, rapid.ID[string]).Draw(t, "env") {
			env = append(env, map[string]any{"name": n, "value": genLabelVal.Draw(t, "envValue")})
		}
		if len(env) > 0 {
			container["env"] = env
		}
		doc["apiVersion"] = "apps/v1"
		doc["spec"] = map[string]any{
			"replicas": rapid.IntRange(0, 10).Draw(t, "replicas"),
			"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": tmplLabels},
				"spec":     map[string]any{"containers": []any{container}},
			},
		}
	case "Service":
		var ports []any
		for _, p := range rapid.SliceOfNDistinct(rapid.IntRange(1, 65535), 1, 3, rapid.ID[int]).Draw(t, "ports") {
			ports = append(ports, map[string]any{"name": fmt.Sprintf("p%d", p), "port": p})
		}
		doc["spec"] = map[string]any{"selector": map[string]any{"app": genName.Draw(t, "selector")}, "ports": ports}
	case "ConfigMap":
		doc["data"] = rapid.MapOfN(genName, genLabelVal, 0, 3).Draw(t, "data")
	case "Secret":
		doc["stringData"] = rapid.MapOfN(genName, genSecretVal, 0, 2).Draw(t, "stringData")
		data := map[string]string{}
		for k, v := range rapid.MapOfN(genName, genSecretVal, 0, 2).Draw(t, "data") {
			data["b"+k] = base64.StdEncoding.EncodeToString([]byte(v))
		}
		doc["data"] = data
	}
	return doc
}

func genRepository(t *rapid.T) genRepo {
	repo := genRepo{}
	for range rapid.IntRange(0, 8).Draw(t, "objects") {
		kind := rapid.SampledFrom(kinds).Draw(t, "kind")
		name := genName.Draw(t, "name")
		repo[kind+"/"+name] = genDoc(t, kind, name)
	}
	return repo
}

// mutate keeps, drops or rewrites each object of repo and adds new ones.
func mutate(t *rapid.T, repo genRepo) genRepo {
	out := genRepo{}
	for _, k := range slices.Sorted(maps.Keys(repo)) {
		switch rapid.IntRange(0, 2).Draw(t, "fate") {
		case 0:
			out[k] = repo[k]
		case 1:
			kind, name, _ := strings.Cut(k, "/")
			out[k] = genDoc(t, kind, name)
		}
	}
	maps.Copy(out, genRepository(t))
	return out
}

func (r genRepo) fs(t *rapid.T) fstest.MapFS {
	fsys := fstest.MapFS{}
	for k, doc := range r {
		data, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		fsys[strings.ReplaceAll(k, "/", "-")+".yaml"] = &fstest.MapFile{Data: data}
	}
	return fsys
}

func (r genRepo) load(t *rapid.T) *render.Desired {
	d, err := render.Load(context.Background(), r.fs(t), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (r genRepo) secretValues() []string {
	var vs []string
	for _, doc := range r {
		if doc["kind"] != "Secret" {
			continue
		}
		for _, v := range doc["stringData"].(map[string]string) {
			vs = append(vs, v, base64.StdEncoding.EncodeToString([]byte(v)))
		}
		for _, v := range doc["data"].(map[string]string) {
			plain, _ := base64.StdEncoding.DecodeString(v)
			vs = append(vs, v, string(plain))
		}
	}
	return vs
}

func keySet(d *render.Desired) map[render.Key]bool {
	s := map[render.Key]bool{}
	for _, o := range d.Objects {
		s[o.Key()] = true
	}
	return s
}

// TestDiffProperties checks, on random repositories, that planning a
// revision against itself yields nothing to do, that an object present on
// one side only is always created or deleted, that an object on both sides
// is updated or replaced exactly when its document changed, that changes
// come sorted and that no Secret value reaches any output.
func TestDiffProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		repoA := genRepository(t)
		repoB := mutate(t, repoA)
		a, a2, b := repoA.load(t), repoA.load(t), repoB.load(t)

		if got := Diff(a, a2); len(got) != 0 {
			t.Fatalf("a revision planned against itself changes %d objects: %+v", len(got), got)
		}

		changes := Diff(a, b)
		inA, inB := keySet(a), keySet(b)
		seen := map[render.Key]Action{}
		for i, c := range changes {
			k := c.Key()
			if i > 0 && changes[i-1].Key().Compare(k) >= 0 {
				t.Fatalf("changes not sorted by key: %s after %s", k, changes[i-1].Key())
			}
			seen[k] = c.Action
			switch {
			case inA[k] && !inB[k]:
				if c.Action != ActionDelete {
					t.Fatalf("%s is only in a but is %s", k, c.Action)
				}
			case inB[k] && !inA[k]:
				if c.Action != ActionCreate {
					t.Fatalf("%s is only in b but is %s", k, c.Action)
				}
			case inA[k] && inB[k]:
				if c.Action != ActionUpdate && c.Action != ActionReplace || len(c.Fields) == 0 {
					t.Fatalf("%s is on both sides: %s with %d fields", k, c.Action, len(c.Fields))
				}
			default:
				t.Fatalf("change for %s, which is in neither", k)
			}
		}
		for k := range inA {
			if !inB[k] && seen[k] != ActionDelete {
				t.Fatalf("%s is only in a, no delete", k)
			}
		}
		for k := range inB {
			if !inA[k] && seen[k] != ActionCreate {
				t.Fatalf("%s is only in b, no create", k)
			}
		}

		// An object on both sides changes exactly when its document does.
		for k, docA := range repoA {
			docB, ok := repoB[k]
			if !ok {
				continue
			}
			kind, name, _ := strings.Cut(k, "/")
			key := render.Key{Kind: kind, Namespace: "default", Name: name}
			if kind == "Deployment" {
				key.Group = "apps"
			}
			_, changed := seen[key]
			if same := reflect.DeepEqual(docA, docB); same == changed {
				t.Fatalf("%s: document unchanged %v, but changed in the plan %v", key, same, changed)
			}
		}

		// Going back touches the same objects.
		back := Diff(b, a)
		if len(back) != len(changes) {
			t.Fatalf("%d changes from a to b, %d back", len(changes), len(back))
		}

		p := NewPlan(Revision{Rev: "a", Desired: a}, Revision{Rev: "b", Desired: b})
		var out bytes.Buffer
		for _, err := range []error{p.WriteText(&out, true), p.WriteMarkdown(&out), p.WriteJSON(&out)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, v := range append(repoA.secretValues(), repoB.secretValues()...) {
			if strings.Contains(out.String(), v) {
				t.Fatalf("secret value %q in the output:\n%s", v, out.String())
			}
		}
	})
}
