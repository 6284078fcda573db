package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"
)

// DefaultNotesRef holds berth's notes: what reconciling each source commit
// did. `git log --notes=berth` shows them.
const DefaultNotesRef = "refs/notes/berth"

// ErrNoNote: the commit has no note under the notes reference.
var ErrNoNote = errors.New("no note")

// maxNoteSize bounds a note read back, so that a hostile repository cannot
// make Note allocate without limit.
const maxNoteSize = 1 << 20

// notesRefName normalises a notes reference: "" is DefaultNotesRef and a
// short name ("berth") lives under refs/notes/, as git's --ref does.
func notesRefName(ref string) (plumbing.ReferenceName, error) {
	if ref == "" {
		ref = DefaultNotesRef
	}
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/notes/" + ref
	}
	name := plumbing.ReferenceName(ref)
	if !strings.HasPrefix(ref, "refs/notes/") {
		return "", fmt.Errorf("notes reference %q is not under refs/notes/", ref)
	}
	if err := name.Validate(); err != nil {
		return "", fmt.Errorf("notes reference %q is not a valid reference name", ref)
	}
	return name, nil
}

// AddNote attaches text to the commit rev resolves to, as git notes does:
// a commit on notesRef ("" for DefaultNotesRef) whose tree holds a blob
// named after the commit's hash. An existing note of that commit is
// replaced. It returns the new notes commit, or the current one when the
// note already said exactly text.
//
// The notes tree is laid out the way git reads it: flat while small, with
// one level of two-hex-digit directories ("fanout") from 256 notes and two
// from 65,536. Notes git wrote in another layout are found, replaced and
// moved into that layout.
func (r *Repo) AddNote(ctx context.Context, notesRef, rev, text string, author Signature) (string, error) {
	ref, err := notesRefName(notesRef)
	if err != nil {
		return "", err
	}
	text = ensureNewline(text)
	blob := []byte(text)
	bh := plumbing.ComputeHash(plumbing.BlobObject, blob)
	sig := author.object()

	r.mu.Lock()
	defer r.mu.Unlock()
	var h, th plumbing.Hash
	err = r.withWriteStorage(func(s storage.Storer, repo *git.Repository) error {
		target, err := r.resolveIn(repo, rev)
		if err != nil {
			return err
		}
		th = target.Hash
		msg := fmt.Sprintf("Notes added by berth for %s\n", th.String()[:7])
		h, _, err = updateWithRetry(ctx, s, ref, func(tip plumbing.Hash, old flatTree) (plumbing.Hash, error) {
			notes, other := splitNotes(old.files)
			if e, ok := notes[th]; ok && e.hash == bh && !tip.IsZero() {
				return tip, nil
			}
			notes[th] = treeEntry{mode: filemode.Regular, hash: bh}
			want := layoutNotes(notes, other)
			if err := checkFileDirClash(want); err != nil {
				return plumbing.ZeroHash, err
			}
			return commitTree(s, old, want, map[plumbing.Hash][]byte{bh: blob}, tip, msg, sig)
		})
		return err
	})
	if err != nil && th.IsZero() {
		return "", fmt.Errorf("add note: %w", err)
	}
	if err != nil {
		return "", fmt.Errorf("add note to %s on %s: %w", th.String()[:7], ref, err)
	}
	return h.String(), nil
}

// Note returns the note attached to the commit rev resolves to under
// notesRef ("" for DefaultNotesRef), or an error matching ErrNoNote.
func (r *Repo) Note(notesRef, rev string) (string, error) {
	ref, err := notesRefName(notesRef)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var text string
	err = r.withFreshStorage(false, func(s storage.Storer, repo *git.Repository) error {
		target, err := r.resolveIn(repo, rev)
		if err != nil {
			return err
		}
		text, err = readNote(s, ref, target.Hash)
		if err != nil {
			return fmt.Errorf("of %s: %w", target.Hash.String()[:7], err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read note: %w", err)
	}
	return text, nil
}

func readNote(s storage.Storer, ref plumbing.ReferenceName, target plumbing.Hash) (string, error) {
	tip, err := readRef(s, ref)
	if err != nil {
		return "", err
	}
	if tip.IsZero() {
		return "", fmt.Errorf("%w (%s does not exist)", ErrNoNote, ref)
	}
	c, err := object.GetCommit(s, tip)
	if err != nil {
		return "", fmt.Errorf("read commit %s: %w", tip, err)
	}
	ft, err := readTree(s, c.TreeHash)
	if err != nil {
		return "", err
	}
	notes, _ := splitNotes(ft.files)
	e, ok := notes[target]
	if !ok {
		return "", ErrNoNote
	}
	blob, err := object.GetBlob(s, e.hash)
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", e.hash, err)
	}
	if blob.Size > maxNoteSize {
		return "", fmt.Errorf("note of %d bytes is larger than %d", blob.Size, maxNoteSize)
	}
	rd, err := blob.Reader()
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", e.hash, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, maxNoteSize))
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", e.hash, err)
	}
	return string(b), nil
}

// splitNotes separates the notes of a notes tree (entries whose path,
// slashes removed, is a full hex object name, in whatever fanout) from
// anything else kept there, which is preserved as is.
func splitNotes(files map[string]treeEntry) (notes map[plumbing.Hash]treeEntry, other map[string]treeEntry) {
	notes = map[plumbing.Hash]treeEntry{}
	other = map[string]treeEntry{}
	for p, e := range files {
		name := strings.ReplaceAll(p, "/", "")
		if h, ok := noteTarget(p, name); ok && e.mode != filemode.Dir {
			notes[h] = e
			continue
		}
		other[p] = e
	}
	return notes, other
}

// noteTarget reports whether path p (name without its slashes) names a note:
// 40 lowercase hex digits, split only into two-digit directories.
func noteTarget(p, name string) (plumbing.Hash, bool) {
	if len(name) != 40 {
		return plumbing.ZeroHash, false
	}
	for _, c := range name {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return plumbing.ZeroHash, false
		}
	}
	parts := strings.Split(p, "/")
	for _, dir := range parts[:len(parts)-1] {
		if len(dir) != 2 {
			return plumbing.ZeroHash, false
		}
	}
	return plumbing.NewHash(name), true
}

// noteFanout is the number of two-digit directory levels for n notes.
func noteFanout(n int) int {
	switch {
	case n < 256:
		return 0
	case n < 65536:
		return 1
	default:
		return 2
	}
}

// layoutNotes places every note at the path of the fanout its count calls
// for, beside the other entries.
func layoutNotes(notes map[plumbing.Hash]treeEntry, other map[string]treeEntry) map[string]treeEntry {
	fan := noteFanout(len(notes))
	out := make(map[string]treeEntry, len(notes)+len(other))
	for p, e := range other {
		out[p] = e
	}
	for h, e := range notes {
		hex := h.String()
		var b strings.Builder
		for i := 0; i < fan; i++ {
			b.WriteString(hex[2*i : 2*i+2])
			b.WriteByte('/')
		}
		b.WriteString(hex[2*fan:])
		out[b.String()] = e
	}
	return out
}
