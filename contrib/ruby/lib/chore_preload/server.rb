# frozen_string_literal: true

# The preloader's loop: listen on CHORE_PRELOAD_SOCKET, take one fork request per
# connection (a JSON line and, as SCM_RIGHTS, the batch's input, output and log), fork a
# child for the batch, answer with its pid, and go back to accepting at once. SIGTERM (or
# SIGINT) runs the before_shutdown hooks and ends it; batch children are left alone (they
# belong to chore's workers' process groups).
require 'json'
require 'socket'
require_relative 'batch'
require_relative 'child'

module ChorePreload
  # Listens, forks, answers.
  class Server
    # A connection that has not sent its request within this many seconds is dropped, so
    # that a stuck client cannot hold the loop (it never blocks on one connection).
    REQUEST_TIMEOUT = 30

    def initialize(path)
      @path = path
      @pending = {} # connection => when it was accepted
    end

    def run
      @wake_r, @wake_w = IO.pipe
      # A trap handler may not do much; it only wakes the select below.
      %w[TERM INT].each { |sig| trap(sig) { @wake_w.write_nonblock('.', exception: false) } }
      @server = UNIXServer.new(@path) # bind and listen: from now on chore sees us ready
      loop { serve_once }
    end

    private

    def serve_once
      ready, = IO.select([@wake_r, @server, *@pending.keys], nil, nil, 1)
      (ready || []).each do |io|
        if io.equal?(@wake_r) then shut_down
        elsif io.equal?(@server) then accept
        else
          @pending.delete(io)
          handle(io)
        end
      end
      drop_stale_connections
    end

    def accept
      conn = @server.accept_nonblock(exception: false)
      @pending[conn] = now unless conn == :wait_readable
    end

    def drop_stale_connections
      @pending.select { |_, at| now - at > REQUEST_TIMEOUT }.each_key do |conn|
        @pending.delete(conn)
        conn.close
      end
    end

    # One request: a JSON line and three descriptors. A connection that closes without
    # one (chore's readiness check) is ignored.
    def handle(conn)
      # The control length must be nil (as much as comes) or large enough: 0 truncates the
      # ancillary data (MSG_CTRUNC) and the descriptors are lost.
      data, _addr, _flags, *controls = conn.recvmsg(4096, 0, nil, scm_rights: true)
      fds = controls.select { |c| c.cmsg_is?(:SOCKET, :RIGHTS) }.flat_map(&:unix_rights)
      return if data.nil? || (data.empty? && fds.empty?)

      data << read_rest_of_line(conn) unless data.include?("\n")
      reply(conn, fork_batch(JSON.parse(data), fds))
    rescue StandardError => e
      reply(conn, { error: "#{e.class}: #{e.message}" })
    ensure
      fds&.each { |io| io.close unless io.closed? }
      conn.close unless conn.closed?
    end

    # The line normally arrives whole with its descriptors; this only guards against a
    # short read.
    def read_rest_of_line(conn)
      rest = +''
      while !rest.include?("\n") && IO.select([conn], nil, nil, 5)
        chunk = conn.recv(4096)
        break if chunk.empty?

        rest << chunk
      end
      rest
    end

    def fork_batch(request, fds)
      pgid = request['pgid']
      raise ArgumentError, "pgid must be a positive integer, got #{pgid.inspect}" unless pgid.is_a?(Integer) && pgid.positive?
      raise ArgumentError, "expected 3 file descriptors (input, output, log), got #{fds.size}" unless fds.size == 3

      limit = request['memory_limit']
      raise ArgumentError, "memory_limit must be a positive integer, got #{limit.inspect}" unless limit.nil? || (limit.is_a?(Integer) && limit.positive?)

      batch = Batch.new(pgid, request['messages'], Time.now, [])
      # Ruby Chore ran these in its master around each fork, so they run here.
      Chore.run_hooks_for(:before_fork, batch)
      pid = nil
      Chore.run_hooks_for(:around_fork, batch) do
        pid = fork { Child.new(batch, fds, [@server, @wake_r, @wake_w, *@pending.keys], limit).run }
      end
      raise 'an around_fork hook did not yield: no child was forked' unless pid

      Process.detach(pid) # reaps it in a thread of its own, never in this loop
      { pid: pid }
    end

    def reply(conn, answer)
      conn.write("#{JSON.generate(answer)}\n")
    rescue SystemCallError, IOError
      nil # the worker went away; it gives its messages back itself
    end

    def shut_down
      begin
        Chore.run_hooks_for(:before_shutdown)
      rescue StandardError => e
        warn "chore-preload: a before_shutdown hook failed: #{e.class}: #{e.message}"
      end
      @server.close
      File.unlink(@path) if File.socket?(@path)
      exit 0
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
