from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from approvals import demo


class Command(BaseCommand):
    help = "Create the demo users, groups and policies (idempotent); --requests also starts a few requests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--requests", action="store_true", help="start demo requests (needs Temporal)")

    def handle(self, *args: Any, **options: Any) -> None:
        demo.seed_users_and_policies()
        if options["requests"]:
            count = demo.seed_requests()
            if count:
                self.stdout.write(f"started {count} demo requests")
