// Command vcsim serves VMware's vSphere API simulator (govmomi's simulator
// package) for anyvirt's tests.
//
// Debian ships the simulator library but not its command, so anyvirt builds
// this small one from the Debian source. It prints the SDK URL (never the
// password) and shell-style environment lines on stdout once the server
// accepts connections, then serves until SIGTERM or SIGINT (or, with
// -exit-on-stdin-eof, until its stdin closes), removing the
// datastore directories it made on the way out.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	// Registering these adds the REST endpoints (tags, content library)
	// and the lookup service a real vCenter offers next to /sdk.
	_ "github.com/vmware/govmomi/lookup/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0: the kernel picks a free port)")
	datacenters := flag.Int("dc", 1, "datacenters (VPX only)")
	clusters := flag.Int("cluster", 1, "clusters per datacenter (VPX only)")
	clusterHosts := flag.Int("host", 3, "hosts per cluster (VPX only)")
	standaloneHosts := flag.Int("standalone-host", 1, "standalone hosts per datacenter (VPX only)")
	pools := flag.Int("pool", 1, "child resource pools per cluster (VPX only)")
	machines := flag.Int("vm", 2, "virtual machines per resource pool (and per standalone host)")
	datastores := flag.Int("ds", 1, "local datastores, mounted on every host")
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of a vCenter")
	username := flag.String("username", "", "the only user name accepted (empty: any)")
	password := flag.String("password", "", "the only password accepted (empty: any)")
	certFile := flag.String("tlscert", "", "PEM certificate to serve (default: the simulator's built-in one)")
	keyFile := flag.String("tlskey", "", "PEM private key of -tlscert")
	plain := flag.Bool("plain", false, "serve plain HTTP instead of HTTPS")
	stdinWatch := flag.Bool("exit-on-stdin-eof", false,
		"also exit when stdin closes (ties the simulator to its parent, even one that dies unannounced)")
	flag.Parse()

	var model *simulator.Model
	if *esx {
		model = simulator.ESX()
	} else {
		model = simulator.VPX()
		model.Datacenter = *datacenters
		model.Cluster = *clusters
		model.ClusterHost = *clusterHosts
		model.Host = *standaloneHosts
		model.Pool = *pools
	}
	model.Machine = *machines
	model.Datastore = *datastores

	// Datastore contents go to os.TempDir(), i.e. $TMPDIR: the caller
	// chooses where they live by setting it.
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model: %s", err)
	}
	defer model.Remove()

	listenURL := &url.URL{Host: *listen}
	if *username != "" || *password != "" {
		listenURL.User = url.UserPassword(*username, *password)
	}
	model.Service.Listen = listenURL
	model.Service.RegisterEndpoints = true

	if !*plain {
		config := new(tls.Config)
		if *certFile != "" || *keyFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				model.Remove()
				log.Fatalf("vcsim: loading -tlscert/-tlskey: %s", err)
			}
			config.Certificates = []tls.Certificate{cert}
		}
		model.Service.TLS = config
	}

	// Subscribe before serving so a signal sent right after the URL is
	// printed is never lost.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	// A STAND-IN for a host failure (patch 0005; vcsim 0.24.2 cannot disconnect a host):
	// POST /anyvirt/host-state with host=<moid>&connection=notResponding&power=unknown.
	model.Service.HandleFunc("/anyvirt/host-state", setHostState)

	server := model.Service.NewServer()

	sdkURL := *server.URL
	sdkURL.User = nil
	insecure := "false"
	if !*plain {
		insecure = "true"
	}
	fmt.Printf("vcsim serving %s\n", sdkURL.String())
	fmt.Printf("GOVC_URL=%s\n", sdkURL.String())
	fmt.Printf("GOVC_INSECURE=%s\n", insecure)
	fmt.Printf("GOVC_SIM_PID=%d\n", os.Getpid())
	_ = os.Stdout.Sync()

	stop := make(chan struct{}, 2)
	go func() {
		<-signals
		stop <- struct{}{}
	}()
	if *stdinWatch {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- struct{}{}
		}()
	}

	<-stop
	server.Close()
}

// setHostState serves the stand-in host failure: a test marks a host notResponding (or
// connected again), with the power state a vCenter would report.
func setHostState(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	connection := types.HostSystemConnectionState(r.FormValue("connection"))
	power := types.HostSystemPowerState(r.FormValue("power"))
	switch connection {
	case types.HostSystemConnectionStateConnected, types.HostSystemConnectionStateNotResponding,
		types.HostSystemConnectionStateDisconnected:
	default:
		http.Error(w, "connection: connected, notResponding or disconnected", http.StatusBadRequest)
		return
	}
	switch power {
	case types.HostSystemPowerStatePoweredOn, types.HostSystemPowerStatePoweredOff,
		types.HostSystemPowerStateStandBy, types.HostSystemPowerStateUnknown:
	default:
		http.Error(w, "power: poweredOn, poweredOff, standBy or unknown", http.StatusBadRequest)
		return
	}
	ref := types.ManagedObjectReference{Type: "HostSystem", Value: r.FormValue("host")}
	if !simulator.AnyvirtSetHostState(ref, connection, power) {
		http.Error(w, "no such host", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
