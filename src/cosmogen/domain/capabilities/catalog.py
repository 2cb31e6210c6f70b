"""The original studio's catalog entries that have no implementation yet (seed-spec §2.1): shown as
"not yet executable", never faked. Each moves to providers.py when it gets a real adapter and tests."""

from __future__ import annotations

from cosmogen.domain.capabilities.registry import Unsupported

NOT_YET: tuple[Unsupported, ...] = tuple(
    Unsupported(id_, name, category, tuple(capabilities.split()))
    for id_, name, category, capabilities in (
        ("google-gemini", "Google Gemini", "ai", "generate-multimodal"),
        ("xai-grok", "xAI Grok", "ai", "real-time-query"),
        ("gmail", "Gmail", "email", "send-email read-inbox"),
        ("google-drive", "Google Drive", "storage", "upload-file list-files"),
        ("google-docs", "Google Docs", "productivity", "create-document"),
        ("google-sheets", "Google Sheets", "productivity", "update-sheet"),
        ("google-calendar", "Google Calendar", "calendar", "schedule-event sync-availability"),
        ("google-meet", "Google Meet", "communication", "create-meeting"),
        ("google-search", "Google Search", "search", "web-search"),
        ("whatsapp-business", "WhatsApp Business", "communication", "send-message"),
        ("github", "GitHub", "developer", "create-issue trigger-workflow read-repo"),
        ("gitlab", "GitLab", "developer", "create-issue trigger-pipeline"),
        ("vercel", "Vercel", "developer", "deploy-project"),
        ("stripe", "Stripe", "payments", "create-payment manage-subscription read-payment"),
        ("paypal", "PayPal", "payments", "create-payment"),
        ("dropbox", "Dropbox", "storage", "upload-file list-files"),
        ("box", "Box", "storage", "upload-file"),
        ("mailchimp", "Mailchimp", "marketing", "send-campaign manage-audience"),
        ("sendgrid", "SendGrid", "email", "send-email"),
        ("hubspot", "HubSpot", "crm", "create-contact update-crm-record"),
        ("linkedin", "LinkedIn", "social", "post-content"),
        ("youtube", "YouTube", "social", "upload-video"),
        ("trello", "Trello", "project-management", "create-card update-card"),
        ("asana", "Asana", "project-management", "create-task update-task"),
        ("jira", "Jira", "project-management", "create-issue update-issue"),
        ("monday", "monday.com", "project-management", "create-item"),
        ("zoom", "Zoom", "communication", "create-meeting"),
        ("discord", "Discord", "communication", "send-message"),
        ("twilio", "Twilio", "communication", "send-sms"),
        ("google-analytics", "Google Analytics", "analytics", "read-analytics"),
        ("mixpanel", "Mixpanel", "analytics", "track-event"),
        ("airtable", "Airtable", "database", "create-record read-records"),
        ("supabase", "Supabase", "database", "query-database"),
        ("apple-notes", "Apple Notes", "notes", "create-note"),
        ("notion", "Notion", "notes", "create-page query-database"),
        ("evernote", "Evernote", "notes", "create-note"),
    )
)
