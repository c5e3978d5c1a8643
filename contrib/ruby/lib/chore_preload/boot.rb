# frozen_string_literal: true

# The preloader's start: its command line, and loading the application once, as Ruby
# Chore's `chore --require` did, so that every batch child forked later inherits it.
require 'optparse'

module ChorePreload
  # What the command line asked for.
  Options = Struct.new(:requires, :environment, :warmup)

  # Parses the command line and loads the application.
  module Boot
    COMPAT_DIR = File.expand_path('compat', __dir__)

    module_function

    def parse(argv)
      options = Options.new([], nil, true)
      parser = OptionParser.new do |o|
        o.banner = 'Usage: chore-preload --require PATH [--require PATH ...]'
        o.on('-r', '--require PATH', 'a Ruby file to require, or a Rails root (repeatable)') do |path|
          options.requires << File.expand_path(path) # before a Rails root's chdir
        end
        o.on('-e', '--environment ENV', 'RAILS_ENV and RACK_ENV (default: theirs, else development)') do |env|
          options.environment = env
        end
        o.on('--no-warmup', 'fork from the heap as the application left it (no GC and compaction before the first fork)') do
          options.warmup = false
        end
        o.on('-h', '--help', 'show this help') do
          puts o
          exit 0
        end
      end
      begin
        parser.parse!(argv)
      rescue OptionParser::ParseError => e
        abort "chore-preload: #{e.message}\n#{parser}"
      end
      abort "chore-preload: --require PATH is needed\n#{parser}" if options.requires.empty?
      abort "chore-preload: unexpected arguments: #{argv.join(' ')}" unless argv.empty?
      options
    end

    # Loads Chore (the gem or the shim), then each --require in order, then runs the
    # before_first_fork hooks, as Ruby Chore's forked strategy did before its first batch.
    def load_application(options)
      # Ruby Chore wrote the environment back into both variables before loading the app.
      env = options.environment || ENV['RAILS_ENV'] || ENV['RACK_ENV'] || 'development'
      ENV['RAILS_ENV'] = ENV['RACK_ENV'] = env
      gem = load_chore
      options.requires.each { |path| require_path(path, gem) }
      Chore.run_hooks_for(:before_first_fork)
      warm_up if options.warmup
    end

    # Settle the heap before the first fork, as preforking servers do: every object that
    # survived the boot is promoted to the old generation (which a child's minor GCs leave
    # alone) and packed together. A child then writes to fewer of the pages it shares with
    # the preloader, and copies fewer: with a no-op job this cut Ruby's CPU per job by
    # about a fifth. Ruby 3.3's Process.warmup does exactly this; before it, four full
    # collections and a compaction (GC.compact, Ruby 2.7 on) do.
    def warm_up
      return Process.warmup if Process.respond_to?(:warmup)

      4.times { GC.start }
      begin
        GC.compact if GC.respond_to?(:compact)
      rescue NotImplementedError
        nil # a platform without compaction: the collections alone
      end
    end

    # The application's own Chore::Job when the chore-core gem can be loaded (installed, or
    # in the bundle under `bundle exec`); otherwise the shim, whose directory then answers
    # the application's own `require 'chore'`. Either way Chore::Job exists BEFORE the
    # application is loaded, so `include Chore::Job` works in its job classes.
    def load_chore
      require 'chore'
      true
    rescue LoadError
      $LOAD_PATH.unshift(COMPAT_DIR)
      require 'chore'
      false
    end

    # A directory is a Rails root: its config/environment.rb is required from inside it and
    # the application is eager-loaded, so that children share its code; anything else is a
    # Ruby file.
    def require_path(path, gem)
      return require(path) unless File.directory?(path)

      environment = File.join(path, 'config', 'environment.rb')
      abort "chore-preload: #{path} is a directory without config/environment.rb" unless File.file?(environment)
      Dir.chdir(path)
      require_rails_railtie if gem
      require environment
      rails_eager_load
    end

    # With the gem, Ruby Chore loaded its Railtie (it makes Rails log through Chore.logger).
    def require_rails_railtie
      require 'rails'
      require 'chore/railtie'
    rescue LoadError
      nil
    end

    def rails_eager_load
      return unless defined?(::Rails) && ::Rails.respond_to?(:application) && ::Rails.application

      ::Rails.application.eager_load!
    end
  end
end
