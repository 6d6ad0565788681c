package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// DefaultSocket is where the daemon serves and the commands ask, unless
// configured otherwise (status_socket).
const DefaultSocket = "/run/kube-outpost/status.sock"

// Source answers the status socket. Status must not block: it reads what
// the daemon holds in memory, so that it answers while an apiserver is down
// or a sync is running. Explain may read the kernel.
type Source interface {
	Status() Report
	Explain(ctx context.Context, q Query) (Explanation, error)
}

// ErrInUse is returned by Listen and Serve when another process answers on
// the socket.
var ErrInUse = errors.New("in use")

// Serve is Listen, then Listener.Serve.
func Serve(ctx context.Context, path string, src Source) error {
	l, err := Listen(path)
	if err != nil {
		return err
	}
	return l.Serve(ctx, src)
}

// Listener is the status socket, bound and not yet answering.
type Listener struct {
	ln   *net.UnixListener
	path string
	// info is the socket as made, so that we remove it and not a
	// successor's.
	info os.FileInfo
}

// Listen makes the unix socket at path, root's alone (0600); its directory
// is made 0700 when missing. A socket left by a daemon that died is
// replaced; one that answers is not (ErrInUse): it is another daemon's.
func Listen(path string) (*Listener, error) {
	fail := func(err error) (*Listener, error) { return nil, fmt.Errorf("status socket %s: %w", path, err) }
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	if err := removeStale(path); err != nil {
		return fail(err)
	}
	// Bind in a private directory and move the socket into place once it
	// is 0600: bound at path directly it would be open to everyone for a
	// moment, and the umask, which could prevent that, is per process.
	tmp, err := os.MkdirTemp(dir, ".status-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return fail(err)
	}
	// Closing must not unlink the name it was bound at, which is gone:
	// Close takes care of path.
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(bound, 0o600)
	if err == nil {
		err = os.Rename(bound, path)
	}
	var info os.FileInfo
	if err == nil {
		info, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return fail(err)
	}
	return &Listener{ln: ln, path: path, info: info}, nil
}

// Serve answers GET /status and GET /explain?service=CLUSTER/NS/NAME or
// ?target=IP:PORT[/PROTO] with JSON until ctx is done, then closes the
// socket and removes it.
func (l *Listener) Serve(ctx context.Context, src Source) error {
	defer l.Close()
	srv := &http.Server{
		Handler:           handler(src),
		ReadHeaderTimeout: 5 * time.Second,
		// An explain of a large ruleset reads all of iptables-save.
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  30 * time.Second,
		BaseContext:  func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l.ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("status socket %s: %w", l.path, err)
	case <-ctx.Done():
	}
	stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(stop)
	<-done
	return err
}

// Close closes the socket and removes it, unless a successor has replaced
// it meanwhile. Serve does this when it returns; Close is for a Listener
// that never serves (a start that fails after Listen).
func (l *Listener) Close() error {
	err := l.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil // closed by the HTTP server's shutdown
	}
	if cur, serr := os.Lstat(l.path); serr == nil && os.SameFile(cur, l.info) {
		err = errors.Join(err, os.Remove(l.path))
	}
	return err
}

// removeStale removes a socket at path that nobody answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return errors.New("the path exists and is not a socket: remove it, or set status_socket to another path")
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another kube-outpost answers on it: %w", ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether another kube-outpost uses it: %w", err)
	}
	return os.Remove(path)
}

func handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, src.Status().boundTexts())
	})
	mux.HandleFunc("GET /explain", func(w http.ResponseWriter, r *http.Request) {
		q, err := queryOf(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{bound(err.Error())})
			return
		}
		ex, err := src.Explain(r.Context(), q)
		switch {
		case errors.Is(err, model.ErrNotFound):
			writeJSON(w, http.StatusNotFound, errorBody{bound(err.Error())})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, errorBody{bound(err.Error())})
		default:
			writeJSON(w, http.StatusOK, ex)
		}
	})
	return mux
}

// queryOf reads ?service= or ?target=, exactly one of them.
func queryOf(v url.Values) (Query, error) {
	svc, tgt := v.Get("service"), v.Get("target")
	if (svc == "") == (tgt == "") {
		return Query{}, errors.New("give either service=CLUSTER/NAMESPACE/NAME or target=IP:PORT[/PROTOCOL]")
	}
	q, err := model.ParseQuery(svc + tgt)
	switch {
	case err != nil:
		return Query{}, err
	case svc != "" && q.IsTarget():
		return Query{}, fmt.Errorf("service=%q: want CLUSTER/NAMESPACE/NAME", svc)
	case tgt != "" && !q.IsTarget():
		return Query{}, fmt.Errorf("target=%q: want IP:PORT[/PROTOCOL]", tgt)
	}
	return q, nil
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The client went away if this fails; nobody is left to tell.
	_ = json.NewEncoder(w).Encode(v)
}
