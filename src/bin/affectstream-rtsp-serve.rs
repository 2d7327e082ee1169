//! `affectstream-rtsp-serve`: serves MP4 files (H.264 + AAC) over RTSP, in real time, without
//! re-encoding: a stand-in IP camera for trying `affectstream run --source rtsp://...` and for
//! the integration tests (which stop and restart it to play a camera reboot).
//!
//! ```text
//! affectstream-rtsp-serve --port 8554 --mount /lobby=clip.mp4 [--mount /door=other.mp4]
//!                         [--user admin --password secret] [--video-only]
//! ```
//! Prints `ready rtsp://127.0.0.1:PORT/MOUNT` per mount once it listens.

use anyhow::{Context, bail};
use clap::Parser;
use gstreamer as gst;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// Serve MP4 files (H.264 + AAC) over RTSP in real time.
#[derive(Parser)]
#[command(name = "affectstream-rtsp-serve", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// TCP port (0 picks a free one).
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// MOUNT=FILE, e.g. /lobby=clip.mp4; repeat for several.
    #[arg(long, required = true)]
    mount: Vec<String>,
    /// Require this user name (HTTP basic authentication) ...
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// ... with this password.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Serve only the video stream (for files without audio).
    #[arg(long)]
    video_only: bool,
}

/// The media pipeline of one mount. The queues hold up to 10 s: a fragmented MP4 may store
/// a second or more of one track before the other's, and both must preroll.
fn launch_line(file: &std::path::Path, video_only: bool) -> String {
    let location = file.display().to_string().replace('"', "\\\"");
    let audio = if video_only {
        ""
    } else {
        " d.audio_0 ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=10000000000 \
         ! aacparse ! rtpmp4gpay name=pay1 pt=97"
    };
    format!(
        "( filesrc location=\"{location}\" ! qtdemux name=d \
         d.video_0 ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=10000000000 \
         ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 \
         config-interval=-1{audio} )"
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gst::init().context("cannot initialise GStreamer")?;
    let server = rtsp::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let mounts = server
        .mount_points()
        .context("the RTSP server has no mount points")?;
    let auth = match (&args.user, &args.password) {
        (Some(user), Some(password)) => {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
                .build();
            auth.add_basic(rtsp::RTSPAuth::make_basic(user, password).as_str(), &token);
            server.set_auth(Some(&auth));
            true
        }
        _ => false,
    };
    let mut paths = Vec::new();
    for spec in &args.mount {
        let Some((path, file)) = spec.split_once('=') else {
            bail!("--mount '{spec}': expected MOUNT=FILE, e.g. /lobby=clip.mp4");
        };
        let file = std::path::PathBuf::from(file);
        if !file.is_file() {
            bail!("--mount '{spec}': no such file");
        }
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&launch_line(&file, args.video_only));
        // Every client gets its own pipeline from the start of the file.
        factory.set_shared(false);
        if auth {
            factory.add_role_from_structure(
                &gst::Structure::builder("viewer")
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        mounts.add_factory(&path, factory);
        paths.push(path);
    }
    let main_loop = gst::glib::MainLoop::new(None, false);
    let _source = server
        .attach(None)
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    let port = server.bound_port();
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    for path in paths {
        // Nobody reading is no reason to stop serving.
        writeln!(stdout, "ready rtsp://{}:{port}{path}", args.address).ok();
    }
    stdout.flush().ok();
    drop(stdout);
    main_loop.run();
    Ok(())
}
