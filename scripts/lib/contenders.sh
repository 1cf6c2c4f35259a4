# The configurations of the proxies sluice is compared with, HAProxy and nginx, written in one place
# for every script that runs them (bench.sh, challenge.sh, memory.sh, shootout.sh), and of nginx as
# the backend a benchmark puts behind them (bench-pool.sh).
#
# Each function prints a configuration to standard output; options are KEY=VALUE arguments, and an
# option left out is not written, so the proxy's own default applies. What changes how a proxy
# balances, retries, times out or keeps connections is an option, so each script states its
# choices; what only says where files go is written the same way for everyone: nginx keeps its pid,
# error log and temporary files in the folder it is given and stays in the foreground (run it with
# `spawn nginx -p DIR -c DIR/nginx.conf`), and HAProxy is run with `spawn haproxy -db -f FILE`.
# Backends are ports on 127.0.0.1.
# shellcheck shell=bash

# haproxy_config KEY=VALUE...: an HAProxy configuration, one HTTP frontend and its backend.
#   listen=PORT             the frontend's port (required)
#   servers="PORT..."       the backend's servers (required)
#   threads=N [1]           nbthread            maxconn=N [8000]   global maxconn
#   balance=ALGORITHM       e.g. roundrobin, leastconn [HAProxy's default: roundrobin]
#   connect=T [3s] client=T [60s] server=T [60s]    timeouts
#   keepalive=T             timeout http-keep-alive
#   retries=N  redispatch=N  retry_on="EVENT..."  retries, option redispatch, retry-on
#   forwardfor=1            adds X-Forwarded-For and X-Forwarded-Proto
#   tcp_listen=PORT         also a frontend in TCP mode on PORT to the same servers
#   tls_pem=FILE            the HTTP frontend speaks TLS with this certificate and key (one PEM);
#                           TLS 1.3 only, X25519, TLS_AES_128_GCM_SHA256, ALPN http/1.1: the
#                           parameters every TLS benchmark here gives each contender
# HTTP backends reuse idle server connections for any client (`http-reuse always`).
haproxy_config() {
    local listen="" servers="" threads=1 maxconn=8000 balance="" connect=3s client=60s server=60s
    local keepalive="" retries="" redispatch="" retry_on="" forwardfor="" tcp_listen="" tls_pem=""
    local opt
    for opt; do
        case $opt in
        listen=* | servers=* | threads=* | maxconn=* | balance=* | connect=* | client=* | \
            server=* | keepalive=* | retries=* | redispatch=* | retry_on=* | forwardfor=* | \
            tcp_listen=* | tls_pem=*)
            local "$opt"
            ;;
        *)
            echo "haproxy_config: unknown option $opt" >&2
            return 2
            ;;
        esac
    done
    [ -n "$listen" ] && [ -n "$servers" ] || {
        echo "haproxy_config: listen= and servers= are required" >&2
        return 2
    }
    printf 'global\n    nbthread %s\n    maxconn %s\n' "$threads" "$maxconn"
    if [ -n "$tls_pem" ]; then
        echo "    ssl-default-bind-options ssl-min-ver TLSv1.3"
        echo "    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256"
    fi
    printf 'defaults\n    mode http\n'
    printf '    timeout %s\n' "connect $connect" "client $client" "server $server"
    [ -z "$keepalive" ] || echo "    timeout http-keep-alive $keepalive"
    [ -z "$retries" ] || echo "    retries $retries"
    [ -z "$redispatch" ] || echo "    option redispatch $redispatch"
    [ -z "$retry_on" ] || echo "    retry-on $retry_on"
    if [ -n "$tls_pem" ]; then
        printf 'frontend fe\n    bind 127.0.0.1:%s ssl crt %s curves X25519 alpn http/1.1\n' \
            "$listen" "$tls_pem"
    else
        printf 'frontend fe\n    bind 127.0.0.1:%s\n' "$listen"
    fi
    if [ -n "$forwardfor" ]; then
        echo "    option forwardfor"
        echo "    http-request set-header X-Forwarded-Proto ${tls_pem:+https}${tls_pem:-http}"
    fi
    printf '    default_backend be\nbackend be\n'
    [ -z "$balance" ] || echo "    balance $balance"
    echo "    http-reuse always"
    haproxy_servers "$servers"
    if [ -n "$tcp_listen" ]; then
        printf 'frontend fe_tcp\n    mode tcp\n    bind 127.0.0.1:%s\n' "$tcp_listen"
        printf '    default_backend be_tcp\nbackend be_tcp\n    mode tcp\n'
        [ -z "$balance" ] || echo "    balance $balance"
        haproxy_servers "$servers"
    fi
}

haproxy_servers() {
    local i=1 port
    for port in $1; do
        echo "    server s$i 127.0.0.1:$port"
        i=$((i + 1))
    done
}

# haproxy_knows_retry_on_429: whether the installed HAProxy accepts `retry-on 429` (2.6, Debian
# 12's, does not; it came later, haproxy/haproxy#2687).
haproxy_knows_retry_on_429() {
    local probe
    probe=$(mktemp)
    printf 'defaults\n    mode http\n    retry-on 429\n' >"$probe"
    local known=1
    haproxy -c -q -f "$probe" >/dev/null 2>&1 || known=0
    rm -f "$probe"
    [ "$known" = 1 ]
}

# nginx_preamble DIR WORKERS NOFILE CONNECTIONS: what every nginx config here starts with, up to
# and into the open `http {` block: a foreground process keeping its pid, log and temp files in
# DIR (NOFILE empty: the system's file limit).
nginx_preamble() {
    local dir=$1 workers=$2 nofile=$3 connections=$4 temp
    # As root the workers would otherwise run as nobody, who cannot write in DIR.
    [ "$(id -u)" -ne 0 ] || echo "user root;"
    echo "worker_processes $workers;"
    [ -z "$nofile" ] || echo "worker_rlimit_nofile $nofile;"
    echo "daemon off;"
    echo "pid $dir/nginx.pid;"
    echo "error_log $dir/error.log warn;"
    echo "events { worker_connections $connections; }"
    echo "http {"
    echo "    access_log off;"
    for temp in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${temp}_temp_path $dir/$temp;"
    done
}

# nginx_config DIR KEY=VALUE...: an nginx configuration, one server proxying HTTP/1.1 with
# keep-alive to an upstream; its pid, error log (level warn) and temporary files go in DIR.
#   listen=PORT             the server's port (required)
#   servers="PORT..."       the upstream's servers (required)
#   workers=N [1]           worker_processes    connections=N [1024]   worker_connections
#   nofile=N                worker_rlimit_nofile
#   listen_options="..."    after the listen address, e.g. "reuseport backlog=4096"
#   server_options="..."    after each upstream server, e.g. "max_fails=0"
#   balance=METHOD          e.g. least_conn, "random two least_conn" [nginx's default: round
#                           robin]; the upstream's state is then shared by the workers (a zone)
#   upstream_keepalive=N [32]  idle connections kept per worker to the upstream
#   upstream_keepalive_requests=N   requests per upstream connection
#   client_keepalive_requests=N  client_keepalive_timeout=T   the client side's keep-alive
#   forwarded=1             sets X-Forwarded-For and X-Forwarded-Proto
#   next_upstream="..."  tries=N  connect_timeout=T  read_timeout=T   proxy_next_upstream,
#                           proxy_next_upstream_tries, proxy_connect_timeout, proxy_read_timeout
#   tls_cert=FILE tls_key=FILE   the server speaks TLS with this certificate and key: TLS 1.3
#                           only, X25519, TLS_AES_128_GCM_SHA256, session tickets (nginx's
#                           default), as haproxy_config's tls_pem
nginx_config() {
    local dir=$1
    shift
    local listen="" servers="" workers=1 connections=1024 nofile="" listen_options=""
    local server_options="" balance="" upstream_keepalive=32 upstream_keepalive_requests=""
    local client_keepalive_requests="" client_keepalive_timeout="" forwarded="" next_upstream=""
    local tries="" connect_timeout="" read_timeout="" tls_cert="" tls_key="" opt
    for opt; do
        case $opt in
        listen=* | servers=* | workers=* | connections=* | nofile=* | listen_options=* | \
            server_options=* | balance=* | upstream_keepalive=* | upstream_keepalive_requests=* | \
            client_keepalive_requests=* | client_keepalive_timeout=* | forwarded=* | \
            next_upstream=* | tries=* | connect_timeout=* | read_timeout=* | tls_cert=* | tls_key=*)
            local "$opt"
            ;;
        *)
            echo "nginx_config: unknown option $opt" >&2
            return 2
            ;;
        esac
    done
    [ -n "$listen" ] && [ -n "$servers" ] || {
        echo "nginx_config: listen= and servers= are required" >&2
        return 2
    }
    nginx_preamble "$dir" "$workers" "$nofile" "$connections"
    [ -z "$client_keepalive_requests" ] || echo "    keepalive_requests $client_keepalive_requests;"
    [ -z "$client_keepalive_timeout" ] || echo "    keepalive_timeout $client_keepalive_timeout;"
    echo "    upstream be {"
    if [ -n "$balance" ]; then
        echo "        zone be 64k;"
        echo "        $balance;"
    fi
    local port
    for port in $servers; do
        echo "        server 127.0.0.1:$port${server_options:+ $server_options};"
    done
    echo "        keepalive $upstream_keepalive;"
    [ -z "$upstream_keepalive_requests" ] ||
        echo "        keepalive_requests $upstream_keepalive_requests;"
    echo "    }"
    echo "    server {"
    echo "        listen 127.0.0.1:$listen${tls_cert:+ ssl}${listen_options:+ $listen_options};"
    if [ -n "$tls_cert" ]; then
        echo "        ssl_certificate $tls_cert;"
        echo "        ssl_certificate_key $tls_key;"
        echo "        ssl_protocols TLSv1.3;"
        echo "        ssl_ecdh_curve X25519;"
        echo "        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;"
    fi
    echo "        location / {"
    echo "            proxy_pass http://be;"
    echo "            proxy_http_version 1.1;"
    echo "            proxy_set_header Connection \"\";"
    if [ -n "$forwarded" ]; then
        echo "            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
        echo "            proxy_set_header X-Forwarded-Proto \$scheme;"
    fi
    [ -z "$next_upstream" ] || echo "            proxy_next_upstream $next_upstream;"
    [ -z "$tries" ] || echo "            proxy_next_upstream_tries $tries;"
    [ -z "$connect_timeout" ] || echo "            proxy_connect_timeout $connect_timeout;"
    [ -z "$read_timeout" ] || echo "            proxy_read_timeout $read_timeout;"
    echo "        }"
    echo "    }"
    echo "}"
}

# nginx_origin_config DIR KEY=VALUE...: nginx as a backend, answering every request with a tiny 200
# ("ok"), in the foreground, its pid and error log in DIR. Keep-alive settings left out keep
# nginx's own defaults (a stock nginx: 1,000 requests per connection, 75 s idle).
#   ports="PORT..."         the ports it listens on, each with reuseport and backlog=4096 (required)
#   workers=N [1]           worker_processes    connections=N [16384]  worker_connections
#   nofile=N [18000]        worker_rlimit_nofile
#   keepalive_requests=N  keepalive_timeout=T   the client side's keep-alive
nginx_origin_config() {
    local dir=$1
    shift
    local ports="" workers=1 connections=16384 nofile=18000 keepalive_requests=""
    local keepalive_timeout="" opt
    for opt; do
        case $opt in
        ports=* | workers=* | connections=* | nofile=* | keepalive_requests=* | \
            keepalive_timeout=*)
            local "$opt"
            ;;
        *)
            echo "nginx_origin_config: unknown option $opt" >&2
            return 2
            ;;
        esac
    done
    [ -n "$ports" ] || {
        echo "nginx_origin_config: ports= is required" >&2
        return 2
    }
    nginx_preamble "$dir" "$workers" "$nofile" "$connections"
    [ -z "$keepalive_requests" ] || echo "    keepalive_requests $keepalive_requests;"
    [ -z "$keepalive_timeout" ] || echo "    keepalive_timeout $keepalive_timeout;"
    echo "    server {"
    local port
    for port in $ports; do
        echo "        listen 127.0.0.1:$port reuseport backlog=4096;"
    done
    printf '        location / { return 200 "ok\\n"; }\n'
    echo "    }"
    echo "}"
}
