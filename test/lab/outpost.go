//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BuildOutpost builds cmd/kube-outpost of this repository into dir and
// returns the binary's path.
func BuildOutpost(ctx context.Context, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kube-outpost")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kube-outpost")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building kube-outpost: %w\n%s", err, out)
	}
	return bin, nil
}

// Outpost is a kube-outpost daemon in the lab's host namespace, started as
// the systemd unit starts it: `prepare`, then `run`.
type Outpost struct {
	// Pid is the daemon's own process id (`ip netns exec` execs the
	// program): /proc/<Pid> is the daemon's.
	Pid int

	name string // "kube-outpost", or the program StartDaemon started
	cmd  *exec.Cmd
	log  lockedBuffer
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// StartOutpost runs `binary prepare --config cfgPath`, then starts `binary run
// --config cfgPath args...` in HostNS. The daemon is killed if the test
// process dies (Pdeathsig), and by Close at the latest; Stop stops it as
// systemd would.
func (l *Lab) StartOutpost(ctx context.Context, binary, cfgPath string, args ...string) (*Outpost, error) {
	return l.startOutpost(ctx, l.HostNS, nil, binary, cfgPath, args...)
}

// StartOutpost is Lab.StartOutpost in the node's namespace, with env
// added to the daemon's environment (e.g. a PATH whose iptables is the
// legacy one): a kube-outpost beside other proxies, each in a node of its
// own (the kube-proxy comparison).
func (n *Node) StartOutpost(ctx context.Context, env []string, binary, cfgPath string, args ...string) (*Outpost, error) {
	return n.lab.startOutpost(ctx, n.NS, env, binary, cfgPath, args...)
}

func (l *Lab) startOutpost(ctx context.Context, ns string, env []string, binary, cfgPath string, args ...string) (*Outpost, error) {
	prep := l.nsCommand(ctx, ns, binary, "prepare", "--config", cfgPath)
	prep.Env = withEnv(env)
	if out, err := prep.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kube-outpost prepare (in %s): %w\n%s", ns, err, out)
	}
	return l.startDaemon(ns, "kube-outpost", env, binary, append([]string{"run", "--config", cfgPath}, args...)...)
}

// StartDaemon starts another long-running program (kube-proxy, for the
// comparison) in the node's namespace, with env added to its environment.
// It is an Outpost in all but name: Stop, RSS, Log and Pid work the same.
func (n *Node) StartDaemon(name string, env []string, binary string, args ...string) (*Outpost, error) {
	return n.lab.startDaemon(n.NS, name, env, binary, args...)
}

func (l *Lab) startDaemon(ns, name string, env []string, binary string, args ...string) (*Outpost, error) {
	o := &Outpost{name: name, done: make(chan struct{})}
	// Not CommandContext: the daemon outlives the start's context.
	o.cmd = l.nsCommand(context.Background(), ns, binary, args...)
	o.cmd.Env = withEnv(env)
	o.cmd.Stdout, o.cmd.Stderr = &o.log, &o.log
	if err := o.cmd.Start(); err != nil {
		return nil, err
	}
	o.Pid = o.cmd.Process.Pid
	go func() {
		o.err = o.cmd.Wait()
		close(o.done)
	}()
	return o, nil
}

// withEnv is the test process's environment with env added (nil: inherit).
func withEnv(env []string) []string {
	if len(env) == 0 {
		return nil
	}
	return append(os.Environ(), env...)
}

// Log is everything the daemon wrote so far, stdout and stderr.
func (o *Outpost) Log() string { return o.log.String() }

// Done is closed once the daemon has exited.
func (o *Outpost) Done() <-chan struct{} { return o.done }

// Exited reports whether the daemon has exited, and how.
func (o *Outpost) Exited() (bool, error) {
	select {
	case <-o.done:
		return true, o.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, as systemd does, and waits up to grace for the exit;
// then it kills the daemon and says so. The exit status of a daemon that
// stopped in time is returned as is (nil for a clean stop).
func (o *Outpost) Stop(grace time.Duration) error {
	if exited, err := o.Exited(); exited {
		return fmt.Errorf("%s had already exited: %v", o.name, err)
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
		return o.err
	case <-time.After(grace):
	}
	_ = o.cmd.Process.Kill()
	<-o.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", o.name, grace)
}

// RSS returns the daemon's resident set size (VmRSS of /proc/<Pid>/status)
// in bytes.
func (o *Outpost) RSS() (int64, error) {
	return ProcRSS(o.Pid)
}

// ProcRSS returns the resident set size of process pid (VmRSS of
// /proc/<pid>/status) in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345", "kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("/proc/" + strconv.Itoa(pid) + "/status: no VmRSS (a zombie?)")
}

// lockedBuffer is a bytes.Buffer that a process's output and a test may use
// at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
