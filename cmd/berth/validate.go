package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/policy"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/render"
)

const validateHelp = `
Check the manifests under PATH (default .) for errors: malformed YAML,
unknown kinds and fields, invalid names and values, references that do not
resolve, and policy denials. PATH may be any directory, inside a git
repository or not. With --rev, the files are read from that revision of the
repository at --repo instead of from disk.

It needs no machine and no network, so it suits a pre-commit hook or a CI
lint step. Exit status: 0 valid (warnings allowed), 1 errors, 64 usage.

Examples:
  berth validate
  berth validate examples/quickstart
  berth validate --rev HEAD~1 deploy/
`

func runValidate(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "validate", "[--rev REV] [--repo PATH] [-o text|json] [PATH]", validateHelp)
	rev := fs.String("rev", "", "validate this `revision` of the repository instead of the files on disk")
	repoArg := fs.String("repo", envOr(e, "BERTH_REPO", "."), "repository for --rev: a local `path` or a URL (env BERTH_REPO)")
	output := fs.String("o", "text", "output `format`: text or json")
	fs.StringVar(output, "output", "text", "same as -o")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(e.stderr, "berth validate: at most one PATH")
		return exitUsage
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(e.stderr, "berth validate: -o must be text or json, not %q\n", *output)
		return exitUsage
	}
	path := fs.Arg(0)
	if path == "" {
		path = "."
	}

	var d *render.Desired
	var err error
	if *rev != "" {
		d, err = loadRevision(ctx, *repoArg, *rev, filepath.ToSlash(path))
	} else {
		d, err = loadDir(ctx, path)
	}
	if err != nil {
		return fail(e, "validate: %v", err)
	}

	if *output == "json" {
		out := struct {
			Valid       bool               `json:"valid"`
			Objects     int                `json:"objects"`
			Diagnostics render.Diagnostics `json:"diagnostics"`
		}{!d.Diagnostics.HasErrors(), len(d.Objects), d.Diagnostics}
		if out.Diagnostics == nil {
			out.Diagnostics = render.Diagnostics{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fail(e, "validate: %v", err)
		}
	} else {
		for _, diag := range d.Diagnostics {
			fmt.Fprintln(e.stdout, diag)
		}
		errs, warns := d.Diagnostics.Errors(), count(d.Diagnostics, render.SeverityWarning)
		fmt.Fprintf(e.stdout, "%d objects, %d errors, %d warnings\n", len(d.Objects), errs, warns)
	}
	if d.Diagnostics.HasErrors() {
		return exitError
	}
	return exitOK
}

func count(ds render.Diagnostics, s render.Severity) int {
	n := 0
	for _, d := range ds {
		if d.Severity == s {
			n++
		}
	}
	return n
}

// loadDir loads and admits the manifests of a directory on disk. Files are read
// through an os.Root, so no symlink can lead the load outside dir; positions
// are shown relative to the working directory, as the user named dir.
func loadDir(ctx context.Context, dir string) (*render.Desired, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	d, err := render.Load(ctx, root.FS(), render.Options{})
	if err != nil {
		return nil, err
	}
	policy.Admit(d)
	if clean := filepath.Clean(dir); clean != "." {
		prefix := filepath.ToSlash(clean) + "/"
		for i := range d.Diagnostics {
			if d.Diagnostics[i].File != "" {
				d.Diagnostics[i].File = prefix + d.Diagnostics[i].File
			}
		}
	}
	return d, nil
}

// loadRevision loads and admits the manifests under dir at revision rev of
// a repository.
func loadRevision(ctx context.Context, repoArg, rev, dir string) (*render.Desired, error) {
	repo, err := gitsource.OpenOrClone(ctx, repoArg, gitsource.CloneOptions{})
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	r, err := reconciler.LoadRevision(ctx, repo, rev, reconciler.OfflineOptions{Path: dir}, nil)
	if err != nil {
		return nil, err
	}
	return r.Desired, nil
}
