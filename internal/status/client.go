package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

var (
	// ErrNotRunning: no daemon answers on the socket.
	ErrNotRunning = errors.New("kube-outpost is not running")
	// ErrPermission: the socket is root's.
	ErrPermission = errors.New("permission denied: run as root")
)

// ServerError is an error the daemon answered with.
type ServerError struct {
	Code int // HTTP status
	Msg  string
}

func (e *ServerError) Error() string { return e.Msg }

// Is makes a 404 model.ErrNotFound, as it was on the daemon's side.
func (e *ServerError) Is(target error) bool {
	return target == model.ErrNotFound && e.Code == http.StatusNotFound
}

// Get asks the daemon on the socket at path for its status.
func Get(ctx context.Context, path string) (Report, error) {
	var r Report
	err := get(ctx, path, "/status", &r)
	return r, err
}

// Explain asks the daemon on the socket at path to explain q.
func Explain(ctx context.Context, path string, q Query) (Explanation, error) {
	param := "service"
	if q.IsTarget() {
		param = "target"
	}
	var ex Explanation
	err := get(ctx, path, "/explain?"+url.Values{param: {q.String()}}.Encode(), &ex)
	return ex, err
}

func get(ctx context.Context, path, uri string, out any) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	// The host name is not used: the transport dials the socket.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://kube-outpost"+uri, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return dialError(path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading kube-outpost's answer on %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("kube-outpost on %s answered %s", path, resp.Status)
		}
		// The CLI prints it: escaped as the text output is.
		return &ServerError{Code: resp.StatusCode, Msg: model.BoundText(escape(e.Error), maxRendered)}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("kube-outpost on %s answered what this version cannot read: %w", path, err)
	}
	return nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w (no socket at %s)", ErrNotRunning, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (nobody answers on %s, left by a daemon that stopped)", ErrNotRunning, path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w (cannot connect to %s)", ErrPermission, path)
	}
	return fmt.Errorf("asking kube-outpost on %s: %w", path, err)
}
