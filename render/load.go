// Package render turns the YAML files of a fleet repository into typed,
// defaulted objects: the upstream Kubernetes API types for the kinds berth
// runs, and berth's own Machine and Cluster kinds. Every object and field
// keeps the file, line and column it came from, and every problem found is
// reported at once as a Diagnostic at that place. render reads only the
// fs.FS it is given and never talks to machines.
package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"reflect"
	"runtime"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"berth.dev/berth/render/api/v1alpha1"
)

// Limits applied when Options leaves them zero.
const (
	DefaultMaxFileSize = 8 << 20 // bytes
	DefaultMaxNodes    = 1 << 20 // YAML nodes per document, aliases expanded
)

// Options control a load.
type Options struct {
	// Path is the directory of the fs.FS to read, slash-separated; "" or
	// "." reads everything.
	Path string
	// MaxFileSize refuses larger files without reading them.
	MaxFileSize int64
	// MaxNodes refuses documents that expand to more YAML nodes (an alias
	// bomb) before they are expanded further.
	MaxNodes int
	// SkipValidation decodes and defaults only: for a revision whose
	// findings nobody reads (the "from" side of a plan). Decoding errors
	// are still reported, since they leave objects out.
	SkipValidation bool
	// Cache, when set, reuses the decoded objects of files whose name and
	// content were loaded before with the same limits (say, at another
	// revision), so a second load decodes only what changed.
	Cache *Cache
}

// Validate checks the options.
func (o Options) Validate() error {
	p := o.Path
	if p == "" {
		p = "."
	}
	if !fs.ValidPath(p) {
		return fmt.Errorf("path %q: must be a relative, slash-separated path inside the repository", o.Path)
	}
	if o.MaxFileSize < 0 || o.MaxNodes < 0 {
		return errors.New("limits must not be negative")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Path == "" {
		o.Path = "."
	}
	o.Path = path.Clean(o.Path)
	if o.MaxFileSize == 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.MaxNodes == 0 {
		o.MaxNodes = DefaultMaxNodes
	}
	return o
}

// IsManifest reports whether a file name is one render reads.
func IsManifest(name string) bool {
	ext := path.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// Load reads every *.yaml and *.yml file under opts.Path in fsys (skipping
// hidden directories such as .git), decodes, defaults and validates every
// document. Problems with the repository's content are returned as
// Desired.Diagnostics, all of them; the error is for failures to read fsys
// and for a cancelled ctx.
func Load(ctx context.Context, fsys fs.FS, opts Options) (*Desired, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("load manifests: %w", err)
	}
	opts = opts.withDefaults()
	files, diags, err := listFiles(ctx, fsys, opts.Path)
	if err != nil {
		return nil, fmt.Errorf("load manifests: %w", err)
	}

	results := make([]fileResult, len(files))
	workers := min(runtime.GOMAXPROCS(0), max(len(files), 1))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				results[i] = loadFile(fsys, files[i], opts)
			}
		})
	}
feed:
	for i := range files {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load manifests: %w", err)
	}

	d := &Desired{Diagnostics: diags}
	var unknown []unknownDoc
	for _, r := range results {
		d.Diagnostics = append(d.Diagnostics, r.diags...)
		d.Objects = append(d.Objects, r.objects...)
		unknown = append(unknown, r.unknown...)
	}
	d.Cluster = pickCluster(d)
	resolveUnknown(d, unknown)
	dedupe(d)
	d.finish()
	if !opts.SkipValidation {
		d.Diagnostics = append(d.Diagnostics, validate(d)...)
		d.Diagnostics.Sort()
	}
	return d, nil
}

// listFiles walks dir and returns the manifest files in lexical order.
// Symlinks are followed only to files that stay inside fsys (the fs.FS
// implementations render is given refuse the others); a symlink to a
// directory is not followed.
func listFiles(ctx context.Context, fsys fs.FS, dir string) ([]string, Diagnostics, error) {
	var files []string
	var diags Diagnostics
	err := fs.WalkDir(fsys, dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			diags = append(diags, Diagnostic{Severity: SeverityError, Pos: Pos{File: p}, Message: "cannot read: " + cleanFSError(err)})
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		name := e.Name()
		if e.IsDir() {
			if p != dir && strings.HasPrefix(name, ".") {
				return fs.SkipDir
			}
			return nil
		}
		if !IsManifest(name) {
			return nil
		}
		if e.Type()&fs.ModeSymlink != 0 {
			fi, err := fs.Stat(fsys, p)
			if err != nil {
				diags = append(diags, Diagnostic{Severity: SeverityError, Pos: Pos{File: p}, Message: "symlink refused: " + cleanFSError(err)})
				return nil
			}
			if fi.IsDir() {
				diags = append(diags, Diagnostic{Severity: SeverityNote, Pos: Pos{File: p}, Message: "symlink to a directory is not followed"})
				return nil
			}
		} else if !e.Type().IsRegular() {
			return nil
		}
		files = append(files, p)
		return nil
	})
	return files, diags, err
}

func cleanFSError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

type fileResult struct {
	objects []*Object
	unknown []unknownDoc
	diags   Diagnostics
}

type unknownDoc struct {
	apiVersion, kind string
	pos              Pos
}

func fileError(file string, format string, args ...any) Diagnostic {
	return Diagnostic{Severity: SeverityError, Pos: Pos{File: file}, Message: fmt.Sprintf(format, args...)}
}

func loadFile(fsys fs.FS, name string, opts Options) fileResult {
	var r fileResult
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		r.diags = append(r.diags, fileError(name, "cannot read: %s", cleanFSError(err)))
		return r
	}
	if fi.Size() > opts.MaxFileSize {
		r.diags = append(r.diags, fileError(name, "file is %s, over the %s limit for a manifest; not read", humanBytes(fi.Size()), humanBytes(opts.MaxFileSize)))
		return r
	}
	f, err := fsys.Open(name)
	if err != nil {
		r.diags = append(r.diags, fileError(name, "cannot read: %s", cleanFSError(err)))
		return r
	}
	data, err := io.ReadAll(io.LimitReader(f, opts.MaxFileSize+1))
	f.Close()
	if err != nil {
		r.diags = append(r.diags, fileError(name, "cannot read: %s", cleanFSError(err)))
		return r
	}
	if int64(len(data)) > opts.MaxFileSize {
		r.diags = append(r.diags, fileError(name, "file is over the %s limit for a manifest; not read", humanBytes(opts.MaxFileSize)))
		return r
	}
	if opts.Cache != nil {
		return opts.Cache.get(name, data, opts, decodeFile)
	}
	return decodeFile(name, data, opts)
}

// decodeFile decodes and defaults every document of one file. Its result
// depends only on its arguments, which is what makes Cache sound.
func decodeFile(name string, data []byte, opts Options) fileResult {
	var r fileResult
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			pos := Pos{File: name, Line: yamlErrorLine(err)}
			if pos.Line > 0 {
				pos.Column = 1
			}
			r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: pos, Message: "malformed YAML: " + cleanYAMLError(err)})
			break
		}
		decodeDocument(&r, name, &doc, opts)
	}
	return r
}

// yamlErrorLine digs the line number out of a yaml.v3 syntax error.
func yamlErrorLine(err error) int {
	s := err.Error()
	i := strings.Index(s, "line ")
	if i < 0 {
		return 0
	}
	n := 0
	for _, c := range s[i+5:] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// decodeDocument decodes one YAML document into an Object, or records why
// it cannot.
func decodeDocument(r *fileResult, file string, doc *yaml.Node, opts Options) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	docPos := Pos{File: file, Line: root.Line, Column: root.Column}
	if isNull(root) {
		return // an empty document, e.g. a trailing ---
	}
	if root.Kind != yaml.MappingNode {
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: docPos, Message: "a manifest must be a mapping with apiVersion and kind, got " + describe(root)})
		return
	}
	apiVersion, avNode := scalarField(root, "apiVersion")
	kindName, kindNode := scalarField(root, "kind")
	switch {
	case avNode == nil && kindNode == nil:
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: docPos, Message: "missing apiVersion and kind"})
		return
	case avNode == nil:
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: docPos, Object: kindName, Field: "apiVersion", Message: "missing apiVersion"})
		return
	case kindNode == nil:
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: docPos, Field: "kind", Message: "missing kind"})
		return
	}
	k := lookupKind(apiVersion, kindName)
	if k == nil {
		r.unknown = append(r.unknown, unknownDoc{apiVersion: apiVersion, kind: kindName, pos: Pos{File: file, Line: kindNode.Line, Column: kindNode.Column}})
		return
	}
	d := &decoder{file: file, fields: make([]fieldPos, 0, 64), budget: opts.MaxNodes}
	v := k.new()
	if err := d.decode(root, reflect.ValueOf(v).Elem(), ""); err != nil {
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: docPos, Object: kindName, Message: fmt.Sprintf("%v (over %d YAML nodes; an alias bomb?); not decoded", err, opts.MaxNodes)})
		return
	}
	o := &Object{APIVersion: apiVersion, Kind: kindName, Obj: v, Pos: docPos, fields: d.fields}
	if m := Meta(o); m != nil {
		o.Name = m.Name
		o.Namespace = m.Namespace
		if k.namespaced && o.Namespace == "" {
			o.Namespace = "default"
		}
		if !k.namespaced && o.Namespace != "" {
			r.diags = append(r.diags, Diagnostic{Severity: SeverityWarning, Pos: o.FieldPos("metadata.namespace"), Object: o.Ref(), Field: "metadata.namespace", Message: kindName + " is cluster-scoped; the namespace is ignored"})
			o.Namespace = ""
		}
	}
	for _, e := range d.errs {
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Pos: e.pos, Object: o.Ref(), Field: e.path, Message: e.msg})
	}
	if len(d.errs) > 0 {
		return // a half-decoded object would only cause follow-on errors
	}
	applyDefaults(o)
	r.objects = append(r.objects, o)
}

func scalarField(m *yaml.Node, name string) (string, *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			v := m.Content[i+1]
			if v.Kind == yaml.ScalarNode {
				return v.Value, v
			}
			return "", v
		}
	}
	return "", nil
}

// pickCluster finds the repository's Cluster document; there may be at
// most one. It returns the defaulted settings in any case.
func pickCluster(d *Desired) *v1alpha1.Cluster {
	var found *Object
	kept := d.Objects[:0]
	for _, o := range d.Objects {
		c, ok := o.Obj.(*v1alpha1.Cluster)
		if !ok {
			kept = append(kept, o)
			continue
		}
		_ = c
		if found != nil {
			d.Diagnostics = append(d.Diagnostics, Diagnostic{Severity: SeverityError, Pos: o.Pos, Object: o.Ref(),
				Message: fmt.Sprintf("a repository has at most one Cluster; another is at %s", found.Pos)})
			continue
		}
		found = o
		kept = append(kept, o)
	}
	d.Objects = kept
	if found != nil {
		return found.Obj.(*v1alpha1.Cluster) // defaulted with the other objects
	}
	c := &v1alpha1.Cluster{}
	defaultCluster(c)
	return c
}

// resolveUnknown turns documents of kinds berth does not know into notes
// (when the Cluster ignores them) or errors.
func resolveUnknown(d *Desired, docs []unknownDoc) {
	for _, u := range docs {
		if ignored(d.Cluster, u.apiVersion, u.kind) {
			d.Diagnostics = append(d.Diagnostics, Diagnostic{Severity: SeverityNote, Pos: u.pos, Field: "kind",
				Message: fmt.Sprintf("%s %s skipped: listed in the Cluster's ignoreKinds", u.apiVersion, u.kind)})
			continue
		}
		msg := fmt.Sprintf("unknown kind %q in apiVersion %q", u.kind, u.apiVersion)
		if alt := servedAs(u.kind); len(alt) > 0 {
			msg += "; berth knows it as " + strings.Join(alt, ", ")
		} else {
			msg += "; list it in the Cluster's spec.ignoreKinds to skip it"
		}
		d.Diagnostics = append(d.Diagnostics, Diagnostic{Severity: SeverityError, Pos: u.pos, Field: "kind", Message: msg})
	}
}

func ignored(c *v1alpha1.Cluster, apiVersion, kind string) bool {
	for _, k := range c.Spec.IgnoreKinds {
		if k.APIVersion == apiVersion && (k.Kind == kind || k.Kind == "*") {
			return true
		}
	}
	return false
}

// dedupe reports objects declared more than once, naming both places, and
// keeps the first.
func dedupe(d *Desired) {
	seen := make(map[Key]*Object, len(d.Objects))
	kept := d.Objects[:0]
	for _, o := range d.Objects {
		k := o.Key()
		if prev, ok := seen[k]; ok {
			first, second := prev, o
			if o.Pos.File < prev.Pos.File || o.Pos.File == prev.Pos.File && o.Pos.Line < prev.Pos.Line {
				first, second = o, prev
			}
			d.Diagnostics = append(d.Diagnostics, Diagnostic{Severity: SeverityError, Pos: second.FieldPos("metadata.name"), Object: o.Ref(),
				Message: "declared twice: also at " + first.Pos.String()})
			continue
		}
		seen[k] = o
		kept = append(kept, o)
	}
	d.Objects = kept
}
