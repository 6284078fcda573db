package logs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a log file's size cap, as the kubelet's containerLogMaxSize
// and containerLogMaxFiles.
const (
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 5
)

// File is a CRI log file that rotates itself: when a line would take it past
// MaxSize, path becomes path.1 (path.1 becomes path.2, and so on; at most
// MaxFiles files in all, the oldest dropped) and a new path is started.
// Writes from several goroutines are serialised, one line per write(2).
type File struct {
	path     string
	maxSize  int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
}

// OpenFile opens (appends to) the log file at path, creating it and its
// directory. maxSize <= 0 means DefaultMaxSize; maxFiles < 2 means
// DefaultMaxFiles (rotation needs at least one old file).
func OpenFile(path string, maxSize int64, maxFiles int) (*File, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if maxFiles < 2 {
		maxFiles = DefaultMaxFiles
	}
	lf := &File{path: path, maxSize: maxSize, maxFiles: maxFiles, now: time.Now}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	if err := lf.open(); err != nil {
		return nil, err
	}
	return lf, nil
}

func (lf *File) open() error {
	f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	lf.f, lf.size = f, fi.Size()
	return nil
}

// Write appends e as one line, rotating first when the line would not fit.
func (lf *File) Write(e Entry) error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f == nil {
		return os.ErrClosed
	}
	lf.buf = AppendEntry(lf.buf[:0], e)
	if lf.size > 0 && lf.size+int64(len(lf.buf)) > lf.maxSize {
		if err := lf.rotate(); err != nil {
			return err
		}
	}
	n, err := lf.f.Write(lf.buf)
	lf.size += int64(n)
	if err != nil {
		return fmt.Errorf("write log file: %w", err)
	}
	return nil
}

// rotate shifts path.N to path.N+1 (dropping the oldest), path to path.1,
// and opens a new, empty path.
func (lf *File) rotate() error {
	if err := lf.f.Close(); err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	lf.f = nil
	for i := lf.maxFiles - 1; i >= 1; i-- {
		err := os.Rename(RotatedPath(lf.path, i-1), RotatedPath(lf.path, i))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log file: %w", err)
		}
	}
	return lf.open()
}

// Close closes the file.
func (lf *File) Close() error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f == nil {
		return nil
	}
	err := lf.f.Close()
	lf.f = nil
	return err
}

// Copy writes what r yields to lf as lines of stream s, until r ends: one
// Full line per line of output, Partial lines for chunks of lines longer
// than MaxLineSize, and whatever is left without a newline at the end as a
// Full line. Write errors (a full disk) do not stop the copy, so that the
// container never blocks on its output; the first one is returned.
func (lf *File) Copy(r io.Reader, s Stream) error {
	br := bufio.NewReaderSize(r, MaxLineSize)
	var werr error
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			tag := Full
			switch {
			case line[len(line)-1] == '\n':
				line = line[:len(line)-1]
			case err == bufio.ErrBufferFull:
				tag = Partial
			}
			if e := lf.Write(Entry{Time: lf.now(), Stream: s, Tag: tag, Content: line}); e != nil && werr == nil {
				werr = e
			}
		}
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed):
			return werr
		default:
			return fmt.Errorf("read %s: %w", s, err)
		}
	}
}

// RotatedPath is the name of the i-th older file of the log at path (path
// itself for 0).
func RotatedPath(path string, i int) string {
	if i == 0 {
		return path
	}
	return path + "." + strconv.Itoa(i)
}

// Files returns the files of the log at path that exist, oldest first:
// path.N, ..., path.1, path.
func Files(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list log files: %w", err)
	}
	var rotated []int
	current := false
	for _, e := range ents {
		name := e.Name()
		if name == base {
			current = true
			continue
		}
		suffix, ok := strings.CutPrefix(name, base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suffix); err == nil && n > 0 && strconv.Itoa(n) == suffix {
			rotated = append(rotated, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(rotated)))
	var out []string
	for _, n := range rotated {
		out = append(out, RotatedPath(path, n))
	}
	if current {
		out = append(out, path)
	}
	return out, nil
}

// Remove removes the log at path with all its rotated files.
func Remove(path string) error {
	files, err := Files(path)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove log: %w", err)
		}
	}
	return nil
}
