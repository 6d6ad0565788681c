package laststate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Subdir is the directory under state_dir that holds the files, one per
// cluster, <name>.json: nothing else is ever written or removed there.
const Subdir = "last-known"

// tmpMarker is in the name of a file being written; such a file is never
// read, and one a crash left is removed by Prune.
const tmpMarker = ".json.tmp-"

// Path is the file of cluster in dir. Cluster names are [a-z0-9-] (config
// checks them), so they are safe as file names.
func Path(dir, cluster string) string { return filepath.Join(dir, cluster+".json") }

// Save writes st to its file in dir atomically: a temporary file in the
// same directory, synced, renamed over the old one, and the directory
// synced, so that a crash or power loss at any point leaves the old file
// or the new one, whole. It returns the file's size.
func Save(dir string, st State) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, "."+st.Identity.Cluster+tmpMarker+"*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// The file is written as it is encoded; the checksum, known at the
	// end, goes over its placeholder.
	w := &countingWriter{w: bufio.NewWriterSize(f, 256<<10)}
	sumAt, sum, err := encodeTo(w, st)
	if err != nil {
		return 0, err
	}
	if err := w.w.Flush(); err != nil {
		return 0, err
	}
	if _, err := f.WriteAt(sum, sumAt); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, Path(dir, st.Identity.Cluster)); err != nil {
		return 0, err
	}
	done = true
	return w.n, syncDir(dir)
}

// countingWriter counts what it passes to a buffered writer.
type countingWriter struct {
	w *bufio.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads want's state from its file in dir. No file gives an error
// that errors.Is fs.ErrNotExist; a file that cannot be used, an
// *UnusableError naming it.
func Load(dir string, want Identity, maxAge time.Duration, now time.Time) (State, error) {
	path := Path(dir, want.Cluster)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return State{}, err
		}
		return State{}, &UnusableError{Path: path, Reason: err.Error()}
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return State{}, &UnusableError{Path: path, Reason: err.Error()}
	case !fi.Mode().IsRegular():
		return State{}, &UnusableError{Path: path, Reason: "not a regular file"}
	case fi.Size() > int64(maxBytes+envelopeSlack):
		return State{}, &UnusableError{Path: path, Reason: fmt.Sprintf("%d bytes, more than a state file may have", fi.Size())}
	}
	// Read with a bound too: the size may change under us.
	data, err := io.ReadAll(io.LimitReader(f, int64(maxBytes+envelopeSlack+1)))
	if err != nil {
		return State{}, &UnusableError{Path: path, Reason: err.Error()}
	}
	st, err := Decode(data, want, maxAge, now)
	var u *UnusableError
	if errors.As(err, &u) {
		u.Path = path
	}
	return st, err
}

// Remove removes cluster's file from dir, if there is one.
func Remove(dir, cluster string) error {
	if err := os.Remove(Path(dir, cluster)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Prune removes from dir the files of clusters not in keep, which a reload
// or an earlier configuration removed, and what interrupted writes left.
// A missing dir is no error.
func Prune(dir string, keep []string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		leftover := strings.HasPrefix(name, ".") && strings.Contains(name, tmpMarker)
		gone := !strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".json") && !slices.Contains(keep, strings.TrimSuffix(name, ".json"))
		if !leftover && !gone {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
