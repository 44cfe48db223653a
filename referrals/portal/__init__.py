"""The end user's pages: the views, their forms and the reads they show (`dashboard`); the
figures they share with the API and the admin come from `referrals.selectors`."""
