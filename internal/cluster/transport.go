package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-outpost/kube-outpost/internal/config"
)

// A watch whose connection dies without a word (a NAT that forgot it, a
// peer that lost power, a half-open connection) is silent to the
// reflector: it waits on it forever. The kernel gives up on such a
// connection after about 15 minutes of retransmissions, and never when
// nothing is being sent, which is all a watch does. These settings notice
// it in seconds.
const (
	// keepAliveIdle, keepAliveInterval and keepAliveCount: TCP keepalive
	// probes after 10 s without traffic, every 5 s; three unanswered ones
	// (25 s) close the connection.
	keepAliveIdle     = 10 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
	// userTimeout bounds how long sent data, keepalive probes included,
	// may go unacknowledged (TCP_USER_TIMEOUT, Linux).
	userTimeout = 25 * time.Second
	// dialTimeout is client-go's 30 s, shortened: an apiserver that does
	// not accept within 10 s is not there.
	dialTimeout = 10 * time.Second
	// http2PingAfter and http2PingTimeout: an HTTP/2 connection that
	// received nothing for 10 s is pinged, and closed if the ping is not
	// answered within 5 s. This catches what TCP cannot: a proxy or load
	// balancer whose TCP side is alive while nothing flows behind it.
	// client-go's defaults are 30 s and 15 s.
	http2PingAfter   = 10 * time.Second
	http2PingTimeout = 5 * time.Second
)

// connect makes the client a watcher of the cluster uses, and the link its
// requests go through; obs hears of the requests' outcomes.
func connect(c config.Cluster, obs linkObserver, log *slog.Logger) (kubernetes.Interface, *link, error) {
	rc, err := RESTConfig(c)
	if err != nil {
		return nil, nil, err
	}
	if rc.Dial == nil {
		// A dialer of our own also gives this client a transport of its
		// own: client-go shares transports between equal configs, and
		// hands the plain-HTTP ones http.DefaultTransport.
		rc.Dial = dialer().DialContext
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		tuneHTTP2(rt, http2PingAfter, http2PingTimeout)
		return rt
	})
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	base, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	l := newLink(hc.Transport, base.JoinPath("readyz").String(), obs, log)
	// Outermost, past client-go's wrappers: a held request gets its
	// credentials when it goes, not when it came.
	hc.Transport = l
	cs, err := kubernetes.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	return cs, l, nil
}

// dialer dials apiservers with TCP keepalive and TCP_USER_TIMEOUT.
func dialer() *net.Dialer {
	return &net.Dialer{
		Timeout: dialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
		},
		Control: setUserTimeout(userTimeout),
	}
}

// tuneHTTP2 sets the HTTP/2 health check of the *http.Transport under
// client-go's wrappers. client-go reads it from the environment only
// (HTTP2_READ_IDLE_TIMEOUT_SECONDS, HTTP2_PING_TIMEOUT_SECONDS), for every
// client of the process; golang.org/x/net/http2 reads the net/http
// Transport's HTTP2 settings for each connection it makes, over its own.
// It must run before the transport's first request.
func tuneHTTP2(rt http.RoundTripper, after, timeout time.Duration) bool {
	for {
		switch t := rt.(type) {
		case *http.Transport:
			h2 := &http.HTTP2Config{}
			if t.HTTP2 != nil {
				*h2 = *t.HTTP2
			}
			h2.SendPingTimeout, h2.PingTimeout = after, timeout
			t.HTTP2 = h2
			return true
		case utilnet.RoundTripperWrapper:
			rt = t.WrappedRoundTripper()
		default:
			return false
		}
	}
}
