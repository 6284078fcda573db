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
// MaxSize, path is renamed path.N, N one more than the last rotated file's
// (names of rotated files never change, so readers can follow them while
// the writer rotates), a new path is started, and the oldest files beyond
// MaxFiles in all are removed. Writes from several goroutines are
// serialised, one line per write(2).
type File struct {
	path     string
	maxSize  int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	seq  int // of the newest rotated file
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
	rotated, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	if len(rotated) > 0 {
		lf.seq = rotated[len(rotated)-1]
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

// rotate renames path to the next path.N, opens a new, empty path, and
// removes the rotated files beyond the cap.
func (lf *File) rotate() error {
	if err := lf.f.Close(); err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	lf.f = nil
	lf.seq++
	if err := os.Rename(lf.path, RotatedPath(lf.path, lf.seq)); err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	if err := lf.open(); err != nil {
		return err
	}
	rotated, err := rotatedFiles(lf.path)
	if err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	for _, n := range rotated {
		if n <= lf.seq-(lf.maxFiles-1) {
			if err := os.Remove(RotatedPath(lf.path, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("rotate log file: %w", err)
			}
		}
	}
	return nil
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

// RotatedPath is the name of the rotated file number n of the log at path
// (path itself for 0).
func RotatedPath(path string, n int) string {
	if n == 0 {
		return path
	}
	return path + "." + strconv.Itoa(n)
}

// Files returns the files of the log at path that exist, oldest first:
// the rotated ones by number, then path.
func Files(path string) ([]string, error) {
	rotated, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range rotated {
		out = append(out, RotatedPath(path, n))
	}
	if _, err := os.Lstat(path); err == nil {
		out = append(out, path)
	}
	return out, nil
}

// rotatedFiles returns the numbers of the rotated files of the log at path,
// in increasing order.
func rotatedFiles(path string) ([]int, error) {
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
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suffix); err == nil && n > 0 && strconv.Itoa(n) == suffix {
			rotated = append(rotated, n)
		}
	}
	sort.Ints(rotated)
	return rotated, nil
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
