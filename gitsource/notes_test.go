package gitsource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"berth.dev/berth/internal/gittest"
)

func TestAddNoteReadByGit(t *testing.T) {
	src, head := sourceRepo(t)
	first := gitCLI(t, src.Path(), "rev-parse", "main")
	second := src.Commit(map[string]string{"apps/web.yaml": "kind: Deployment\nreplicas: 2\n"}, "scale web")
	if first != head {
		t.Fatal("unexpected head")
	}
	ctx := context.Background()
	r := openLocal(t, src.Path())
	dir := src.Path()

	if _, err := r.Note("", second); !errors.Is(err, ErrNoNote) {
		t.Fatalf("Note before any = %v, want ErrNoNote", err)
	}
	if _, err := r.AddNote(ctx, "", first, "berth: Ready - 1/1 pods ready", testAuthor); err != nil {
		t.Fatal(err)
	}
	n1, err := r.AddNote(ctx, "berth", "main", "berth: Failed - apps/web.yaml:2: bad", testAuthor)
	if err != nil {
		t.Fatal(err)
	}
	if got := gitCLI(t, dir, "notes", "--ref=berth", "show", first); got != "berth: Ready - 1/1 pods ready" {
		t.Errorf("git notes show first = %q", got)
	}
	if got := gitCLI(t, dir, "log", "--notes=berth", "--format=%h %s%n%N", "main"); got != fmt.Sprintf(
		"%s scale web\nberth: Failed - apps/web.yaml:2: bad\n\n%s add web\nberth: Ready - 1/1 pods ready", second[:7], first[:7]) {
		t.Errorf("git log --notes=berth:\n%s", got)
	}

	// Replacing overwrites; the same text again changes nothing.
	n2, err := r.AddNote(ctx, DefaultNotesRef, second, "berth: Ready - 2/2 pods ready\n", testAuthor)
	if err != nil || n2 == n1 {
		t.Fatalf("replace note = %s, %v", n2, err)
	}
	if again, err := r.AddNote(ctx, DefaultNotesRef, second, "berth: Ready - 2/2 pods ready", testAuthor); err != nil || again != n2 {
		t.Errorf("same note again = %s, %v; want no new commit %s", again, err, n2)
	}
	if got := gitCLI(t, dir, "notes", "--ref=berth", "show", second); got != "berth: Ready - 2/2 pods ready" {
		t.Errorf("replaced note = %q", got)
	}
	if got := gitCLI(t, dir, "notes", "--ref=berth", "list"); len(strings.Split(got, "\n")) != 2 {
		t.Errorf("git notes list:\n%s", got)
	}
	if got := gitCLI(t, dir, "rev-list", "--count", DefaultNotesRef); got != "3" {
		t.Errorf("notes history has %s commits, want 3", got)
	}
	if got, err := r.Note("berth", second); err != nil || got != "berth: Ready - 2/2 pods ready\n" {
		t.Errorf("Note = %q, %v", got, err)
	}
	fsckClean(t, dir)

	// git adds a note on top of ours, and replaces one; we read both and
	// replace git's.
	gitCLI(t, dir, "notes", "--ref=berth", "add", "-f", "-m", "from git", first)
	if got, err := r.Note("berth", first); err != nil || got != "from git\n" {
		t.Errorf("Note of a note git wrote = %q, %v", got, err)
	}
	if _, err := r.AddNote(ctx, "berth", first, "from berth", testAuthor); err != nil {
		t.Fatal(err)
	}
	if got := gitCLI(t, dir, "notes", "--ref=berth", "show", first); got != "from berth" {
		t.Errorf("note after replacing git's = %q", got)
	}
	fsckClean(t, dir)
}

func TestAddNoteRefuses(t *testing.T) {
	src, head := sourceRepo(t)
	ctx := context.Background()
	r := openLocal(t, src.Path())
	if _, err := r.AddNote(ctx, "refs/heads/main", head, "x", testAuthor); err == nil {
		t.Error("a note on refs/heads/main was accepted")
	}
	if _, err := r.AddNote(ctx, "", strings.Repeat("ab", 20), "x", testAuthor); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("note on a missing commit: %v, want ErrUnknownRevision", err)
	}
}

// Past 256 notes the tree fans out into two-digit directories as git's
// does; git reads every note, and notes git wrote flat are moved.
func TestAddNoteFanout(t *testing.T) {
	src, _ := sourceRepo(t)
	dir := src.Path()
	var commits []string
	for i := 0; i < 300; i++ {
		commits = append(commits, src.Commit(map[string]string{"n": fmt.Sprint(i)}, fmt.Sprint("c", i)))
	}
	// git writes the first notes (flat, it has few).
	for _, c := range commits[:3] {
		gitCLI(t, dir, "notes", "--ref=berth", "add", "-m", "git "+c[:7], c)
	}
	ctx := context.Background()
	r := openLocal(t, dir)
	for i, c := range commits {
		if _, err := r.AddNote(ctx, "", c, fmt.Sprint("note ", i), testAuthor); err != nil {
			t.Fatal(err)
		}
		if i == 254 {
			if got := gitCLI(t, dir, "ls-tree", "--name-only", DefaultNotesRef); !strings.Contains(got, commits[0]) {
				t.Errorf("255 notes are not flat:\n%.200s", got)
			}
		}
	}
	list := strings.Split(gitCLI(t, dir, "notes", "--ref=berth", "list"), "\n")
	if len(list) != 300 {
		t.Fatalf("git notes list has %d notes, want 300", len(list))
	}
	for _, i := range []int{0, 1, 2, 150, 299} {
		if got := gitCLI(t, dir, "notes", "--ref=berth", "show", commits[i]); got != fmt.Sprint("note ", i) {
			t.Errorf("note of commit %d = %q", i, got)
		}
	}
	top := gitCLI(t, dir, "ls-tree", DefaultNotesRef)
	for _, line := range strings.Split(top, "\n") {
		if f := strings.Fields(line); len(f) != 4 || f[1] != "tree" || len(f[3]) != 2 {
			t.Fatalf("300 notes not fanned out: %q", line)
		}
	}
	fsckClean(t, dir)
}

// BenchmarkAddNote adds a note to one of 300 commits that all have notes
// (a fanned-out notes tree) each time.
func BenchmarkAddNote(b *testing.B) {
	src := gittest.NewBare(b)
	var commits []string
	for i := 0; i < 300; i++ {
		commits = append(commits, src.Commit(map[string]string{"n": fmt.Sprint(i)}, fmt.Sprint("c", i)))
	}
	ctx := context.Background()
	r := openLocal(b, src.Path())
	for _, c := range commits {
		if _, err := r.AddNote(ctx, "", c, "first", testAuthor); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.AddNote(ctx, "", commits[i%300], fmt.Sprint("note ", i), testAuthor); err != nil {
			b.Fatal(err)
		}
	}
}
